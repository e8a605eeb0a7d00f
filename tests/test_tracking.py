"""MLflow tracking against a real local store (SQLite, MLflow 3's local default): a multirun logged as a parent run
with one child per job, read back with mlflow.search_runs; a broken store is one warning and the run is kept."""

from __future__ import annotations

import json

import mlflow

from harness.tracking import MLflowTracker
from tests.test_sweep import TINY, _model, harness


def test_multirun_logs_a_parent_and_child_runs_to_a_real_mlflow_store(tiny_model, tmp_path):
    out, uri = tmp_path / "sweep", f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = harness("-m", *TINY, f"results_dir={out}", "limit.heldout=6,8", "strategies=[zero_shot,lora]",
                "strategies.lora.epochs=1", "strategies.lora.dev_fraction=0.2", "tracking=mlflow",
                f"tracking.tracking_uri={uri}", "tracking.experiment=tiny-sweep",
                f"tracking.artifact_location={tmp_path / 'artifacts'}", *_model(tiny_model, tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("tracking: logged to MLflow") == 2
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tiny-sweep"])
    assert len(runs) == 3
    parent = runs[runs["tags.mlflow.parentRunId"].isna()]
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(parent) == 1 and len(children) == 2
    assert set(children["tags.mlflow.parentRunId"]) == {parent["run_id"].iloc[0]}
    assert parent["tags.harness.sweep_dir"].iloc[0] == str(out.resolve())
    for _, child in children.iterrows():
        job = out / ("0" if child["params.limit.heldout"] == "6" else "1")
        comparison = json.loads((job / "comparison.json").read_text())
        verdict = comparison["decision"]["verdict"]
        assert child["tags.verdict.choice"] == verdict["choice"]
        assert child["tags.verdict.fine_tuning_justified"] == str(verdict["fine_tuning_justified"])
        for arm in ("zero_shot", "lora"):
            assert child[f"metrics.{arm}.accuracy"] == comparison["strategies"][arm]["metrics"]["accuracy"]
            low, high = comparison["decision"]["intervals"][arm]["accuracy"]["ci"]
            assert (child[f"metrics.{arm}.accuracy.ci_low"], child[f"metrics.{arm}.accuracy.ci_high"]) == (low, high)
        assert child["params.task"] == "tiny" and child["params.strategies.lora.epochs"] == "1"
        assert json.loads((job / "tracking.json").read_text())["run_id"] == child["run_id"]
        artifacts = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(child["run_id"])}
        assert {"comparison.json", "report.html", "run.json", "training"} <= artifacts
        assert [a.path for a in mlflow.MlflowClient(uri).list_artifacts(child["run_id"], "training/lora")] == \
            ["training/lora/training.json"]
    # logging a folder again reuses its MLflow run; other settings (params are immutable in MLflow) make a new one
    job = out / "0"
    first = json.loads((job / "tracking.json").read_text())["run_id"]
    MLflowTracker(uri, "tiny-sweep").log_run(job)
    assert json.loads((job / "tracking.json").read_text())["run_id"] == first
    run = json.loads((job / "run.json").read_text())
    run["config"]["decision"]["tolerance"] = 0.02
    (job / "run.json").write_text(json.dumps(run))
    MLflowTracker(uri, "tiny-sweep").log_run(job)
    second = json.loads((job / "tracking.json").read_text())["run_id"]
    assert second != first and mlflow.get_run(second).data.params["decision.tolerance"] == "0.02"
    assert len(mlflow.search_runs(experiment_names=["tiny-sweep"])) == 4


def test_a_tracking_failure_is_one_warning_and_the_run_is_kept(tiny_model, tmp_path):
    out = tmp_path / "run"
    r = harness(*TINY, f"results_dir={out}", "limit.heldout=4", "strategies=[zero_shot]", "tracking=mlflow",
                "tracking.tracking_uri=nosuchscheme://tracker",
                *_model(tiny_model, tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("warning: tracking failed") == 1 and "Traceback" not in r.stdout + r.stderr
    assert json.loads((out / "comparison.json").read_text())["decision"]["verdict"]["choice"] == "zero_shot"
    assert (out / "report.html").is_file() and not (out / "tracking.json").exists()

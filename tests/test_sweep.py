"""Scale-out: the Hydra launchers (joblib in parallel, submitit's local executor, the Slurm config) and
`harness sweep`, one report of a multirun with its failed and unfinished cells listed; a rerun skips finished cells."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from harness import sweep
from tests.conftest import ROOT
from tests.test_curve import _run

TINY = ("task=tiny", "forgetting.control=none", "decision.resamples=200", "checks.near_duplicates=false")


def harness(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """The CLI with this checkout first on PYTHONPATH, so launcher workers (new processes) import the same code."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _model(tiny_model, tmp_path) -> tuple[str, ...]:
    return ("model=hf", f"model.name_or_path={tiny_model}", f"cache_dir={tmp_path / 'cache'}")


def test_joblib_runs_two_cells_in_parallel_and_identical_lora_cells_share_one_adapter(tiny_model, tmp_path):
    out = tmp_path / "sweep"
    # the two cells differ only in the held-out size: their LoRA adapters (train data, settings, seed) are identical
    args = ("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY, f"results_dir={out}",
            "limit.heldout=6,8", "strategies=[prompt_only,lora]", "strategies.prompt_only.shots=2",
            "strategies.lora.epochs=1", "strategies.lora.dev_fraction=0.2", *_model(tiny_model, tmp_path))
    r = harness(*args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2," in r.stdout and "is launching 2 jobs" in r.stdout
    assert "validated against ConfigStore schema" not in r.stderr
    prepared = []
    for job, n in (("0", 6), ("1", 8)):
        c = json.loads((out / job / "comparison.json").read_text())
        assert c["heldout_n"] == n and c["decision"]["verdict"]["choice"] in ("prompt_only", "lora")
        assert (out / job / "report.html").is_file()
        for arm in ("prompt_only", "lora"):
            assert len((out / job / arm / "predictions.jsonl").read_text().splitlines()) == n
        prepared.append(json.loads((out / job / "lora" / "prepare.json").read_text())["report"])
    assert prepared[0]["adapter"] == prepared[1]["adapter"]
    assert sorted(p["cached"] for p in prepared) == [False, True]  # one trained it, the other waited and reused it
    assert [p.name for p in (tmp_path / "cache" / "adapters").iterdir() if p.is_dir()] == [Path(prepared[0]["adapter"]).name]

    r = harness("sweep", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((out / "sweep.json").read_text())
    assert report["swept"] == ["limit.heldout"] and report["counts"] == {"finished": 2, "failed": 0, "unfinished": 0}
    assert {(row["job"], row["arm"]) for row in report["rows"]} == {(j, a) for j in "01" for a in ("prompt_only", "lora")}
    assert (out / "sweep_limit_heldout.png").stat().st_size > 1000 and "lora" in (out / "sweep.html").read_text()

    before = (out / "0" / "comparison.json").stat().st_mtime_ns
    r = harness("-m", *args[3:])  # the same sweep again, with the basic launcher: every cell is skipped
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("finished with this configuration; skipped") == 2
    assert (out / "0" / "comparison.json").stat().st_mtime_ns == before


def test_sweep_lists_failed_and_unfinished_cells(tiny_model, tmp_path):
    out = tmp_path / "sweep"
    r = harness("-m", *TINY, f"results_dir={out}", "limit.heldout=6,0", "strategies=[zero_shot]",
                *_model(tiny_model, tmp_path))
    assert r.returncode != 0  # the failed cell fails the sweep, after the other cell ran
    assert (out / "0" / "comparison.json").is_file()
    assert "limit.heldout" in json.loads((out / "1" / sweep.JOB_ERROR).read_text())["error"]
    killed = out / "2" / ".hydra"  # a job that never finished (killed, or still running on the cluster)
    killed.mkdir(parents=True)
    (killed / "overrides.yaml").write_text(yaml.safe_dump(["limit.heldout=<script>alert(1)</script>"]))
    r = harness("sweep", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((out / "sweep.json").read_text())
    assert report["counts"] == {"finished": 1, "failed": 1, "unfinished": 1}
    status = {j["job"]: (j["status"], j["error"]) for j in report["jobs"]}
    assert status["0"] == ("finished", None) and status["2"] == ("unfinished", None)
    assert status["1"][0] == "failed" and "positive whole number" in status["1"][1]
    assert "failed" in r.stdout and "unfinished" in r.stdout
    html = (out / "sweep.html").read_text()
    assert "&lt;script&gt;" in html and "<script>" not in html  # everything user-supplied is escaped
    assert "positive whole number" in (out / "sweep.md").read_text()


def _fake_job(folder: Path, overrides: list[str], comparison: dict, train: int) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / "comparison.json").write_text(json.dumps(comparison))
    (folder / "run.json").write_text(json.dumps({"limits": {"train": train}}))


def test_sweep_over_train_sizes_and_seeds_reads_one_curve_per_seed(tmp_path):
    scores = {(16, 0): (0.5, 0.3), (64, 0): (0.55, 0.7), (16, 1): (0.52, 0.35), (64, 1): (0.5, 0.45)}
    for i, ((n, seed), (rag, lora)) in enumerate(scores.items()):
        _fake_job(tmp_path / str(i), ["task=t", f"limit.train={n}", f"seed={seed}"],
                  _run(n, {"rag": rag, "lora": lora}), n)
    report = sweep.build(tmp_path)
    assert report["swept"] == ["limit.train", "seed"] and report["numeric_knobs"] == ["limit.train", "seed"]
    curves = {lc["group"]["seed"]: lc["curve"]["findings"][0] for lc in report["learning_curves"]}
    assert curves["0"]["overtakes_at"] == 64 and curves["1"]["overtakes_at"] is None
    lora = [r for r in report["rows"] if r["arm"] == "lora"]
    assert [r["value"] for r in lora] == [0.3, 0.7, 0.35, 0.45] and all(r["fine_tuned"] for r in lora)


def test_launcher_configs_compose(tmp_path):
    from hydra import compose, initialize_config_dir

    from harness import cli

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        for choice, target in (("joblib", "JoblibLauncher"), ("submitit_local", "LocalLauncher"),
                               ("slurm", "SlurmLauncher")):
            cfg = compose("config", overrides=[f"hydra/launcher={choice}"], return_hydra_config=True)
            assert cfg.hydra.launcher._target_.endswith(target)
        slurm = cfg.hydra.launcher
        assert slurm.gpus_per_node == 1 and slurm.tasks_per_node == 1 and slurm.partition is None
        assert slurm.signal_delay_s == 120  # inherited from the plugin's SlurmQueueConf


def test_submitit_local_runs_each_cell_as_its_own_process(tiny_model, tmp_path):
    out = tmp_path / "sweep"
    r = harness("-m", "hydra/launcher=submitit_local", *TINY, f"results_dir={out}", "limit.heldout=4,6",
                "strategies=[zero_shot]", *_model(tiny_model, tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for job, n in (("0", 4), ("1", 6)):
        assert json.loads((out / job / "comparison.json").read_text())["heldout_n"] == n
    logs = list((out / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2  # one process, one log per cell

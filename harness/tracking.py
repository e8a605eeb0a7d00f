"""Experiment tracking (off by default; `tracking=mlflow`, extra `.[tracking]`): each finished run becomes an MLflow
run with the resolved config as params, every arm's metrics with their interval bounds, the verdict as tags and
comparison.json, report.html and the adapters' training.json as artifacts; the jobs of a multirun become child runs
of one parent run per sweep folder. The run's id is written to tracking.json in the results folder, so a rerun
logs into the same MLflow run. A tracking failure is one warning: the results on disk are never lost."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping

from filelock import FileLock
from hydra.utils import instantiate
from omegaconf import DictConfig

from harness.report import display
from harness.records import Comparison
from harness.results import read_json, write_json

_BAD_NAME = re.compile(r"[^\w\-. /:]")
PARENT_FILE = "mlflow_parent.json"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _name(text: str) -> str:
    return _BAD_NAME.sub("_", text)


def _sweep_dir() -> Path | None:
    """The sweep folder when this run is a job of a Hydra multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(str(HydraConfig.get().sweep.dir))


def track(cfg: DictConfig, run_dir: Path) -> None:
    """Log a finished run to the configured tracker (`tracking._target_`); any failure is one warning."""
    settings = cfg.get("tracking")
    if not settings or not settings.get("_target_"):
        return
    try:
        tracker = instantiate(settings)
        where = tracker.log_run(Path(run_dir), _sweep_dir())
        display.status(f"tracking: logged to {where}")
    except ImportError as e:
        display.status(f"[yellow]warning:[/yellow] tracking skipped: {e.name or e} is not installed "
                       f"(pip install -e \".[tracking]\"); the results folder is complete")
    except Exception as e:  # noqa: BLE001 — tracking must never cost a run
        message = str(e).splitlines()[0] if str(e) else ""
        display.status(f"[yellow]warning:[/yellow] tracking failed ({type(e).__name__}: {message}); the results "
                       f"folder is complete")


class MLflowTracker:
    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None = None):
        from mlflow import MlflowClient

        self.uri, self.experiment, self.artifact_location = str(tracking_uri), str(experiment), artifact_location
        self.client = MlflowClient(tracking_uri=self.uri)

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.experiment, artifact_location=self.artifact_location)
        except Exception:  # another job of the sweep created it first
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def _reusable(self, path: Path, experiment_id: str) -> str | None:
        """The MLflow run id recorded in `path` when it belongs to this store and experiment and still exists."""
        if not path.is_file():
            return None
        known = read_json(path)
        if known.get("tracking_uri") != self.uri or known.get("experiment_id") != experiment_id:
            return None
        try:
            return self.client.get_run(known["run_id"]).info.run_id
        except Exception:  # deleted from the store
            return None

    def _parent(self, sweep_dir: Path, experiment_id: str) -> str:
        """One parent run per sweep folder, created by the first job under a file lock."""
        sweep_dir.mkdir(parents=True, exist_ok=True)
        path = sweep_dir / PARENT_FILE
        with FileLock(str(path) + ".lock"):
            run_id = self._reusable(path, experiment_id)
            if run_id is None:
                run_id = self.client.create_run(experiment_id, tags={
                    "mlflow.runName": f"sweep {sweep_dir.name}", "harness.sweep_dir": str(sweep_dir.resolve())}
                ).info.run_id
                write_json(path, {"tracking_uri": self.uri, "experiment_id": experiment_id, "run_id": run_id})
        return run_id

    def log_run(self, run_dir: Path, sweep_dir: Path | None = None) -> str:
        from mlflow.entities import Metric, Param, RunTag

        comparison = read_json(run_dir / "comparison.json")
        run = read_json(run_dir / "run.json")
        experiment_id = self._experiment_id()
        parent = self._parent(sweep_dir, experiment_id) if sweep_dir is not None else None
        verdict = (comparison.get("decision") or {}).get("verdict") or {}
        tags = {"harness.run_dir": str(run_dir.resolve()), "harness.task": comparison["task"],
                "harness.primary_metric": comparison["primary_metric"],
                "harness.git_sha": str((run.get("git") or {}).get("sha")),
                **{f"verdict.{k}": str(verdict.get(k))[:5000] for k in
                   ("choice", "fine_tuning_justified", "status", "summary")}}
        if parent:
            tags["mlflow.parentRunId"] = parent
        params = [Param(_name(k)[:250], str(v)[:6000]) for k, v in _flatten(run.get("config") or {}).items()]
        record = run_dir / "tracking.json"
        run_id = self._reusable(record, experiment_id)
        if run_id is not None:  # MLflow params are immutable: a rerun with other settings becomes a new run
            logged = self.client.get_run(run_id).data.params
            if any(logged.get(p.key, p.value) != p.value for p in params):
                run_id = None
        if run_id is None:
            name = f"{comparison['task']} {run_dir.name}"
            run_id = self.client.create_run(experiment_id, tags={"mlflow.runName": name}).info.run_id
            write_json(record, {"tracking_uri": self.uri, "experiment_id": experiment_id, "run_id": run_id,
                                "parent_run_id": parent})
        metrics = [Metric(_name(k), v, 0, 0) for k, v in self._metrics(comparison).items()]
        tag_list = [RunTag(k, v) for k, v in tags.items()]
        for i in range(0, max(len(params), len(metrics), 1), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(run_id, metrics=metrics[i:i + 100], params=params[i:i + 100],
                                  tags=tag_list if i == 0 else [])
        for name in ("comparison.json", "report.html", "run.json"):
            if (run_dir / name).is_file():
                self.client.log_artifact(run_id, str(run_dir / name))
        for arm in Comparison.of(comparison).arms:
            prepared = run_dir / arm / "prepare.json"
            adapter = ((read_json(prepared).get("report") or {}).get("adapter") if prepared.is_file() else None)
            if adapter and (Path(adapter) / "training.json").is_file():
                self.client.log_artifact(run_id, str(Path(adapter) / "training.json"), f"training/{_name(arm)}")
        self.client.set_terminated(run_id, "FINISHED")
        if parent:
            self.client.set_terminated(parent, "FINISHED")
        return f"MLflow {self.uri}, experiment {self.experiment!r}, run {run_id}"

    @staticmethod
    def _metrics(comparison: Mapping) -> dict[str, float]:
        out = {}
        intervals = (comparison.get("decision") or {}).get("intervals") or {}
        for arm, result in Comparison.of(comparison).arms.items():
            for metric, value in result.metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    out[f"{arm}.{metric}"] = float(value)
            for metric, interval in (intervals.get(arm) or {}).items():
                if interval.get("ci"):
                    out[f"{arm}.{metric}.ci_low"], out[f"{arm}.{metric}.ci_high"] = map(float, interval["ci"])
        return out

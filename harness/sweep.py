"""One report for a whole multirun (`harness sweep SWEEP_DIR`): every job folder of a Hydra sweep read back, whatever
was swept (arms' settings, models, train sizes, seeds, tasks); one row per job and arm with the primary metric and
its interval, cost and verdict, the swept overrides as columns; unfinished and failed jobs listed, never dropped;
the learning-curve reading (harness/report/curve.py) when `limit.train` was swept. Pure: results folders in, a dict out
(harness/report/sweep.py writes it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import yaml

from harness.report import curve
from harness.errors import HarnessError
from harness.records import Comparison
from harness.results import read_json

JOB_ERROR = "job_error.json"  # written by the CLI when a job of a multirun stops on bad input


def _parse_override(text: str) -> tuple[str, str]:
    key, _, value = str(text).partition("=")
    return key.lstrip("+~"), value


def _overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    try:
        listed = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except (OSError, yaml.YAMLError):
        return {}
    return dict(_parse_override(o) for o in listed if not str(o).startswith("hydra"))


def _optional(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _job(job_dir: Path, sweep_dir: Path) -> dict:
    comparison = _optional(job_dir / "comparison.json")
    run = _optional(job_dir / "run.json") or {}
    failed = _optional(job_dir / JOB_ERROR)
    if comparison and comparison.get("decision"):
        status = "finished"
    elif failed or comparison:  # comparison without a decision: the arms ran, the decision could not be made
        status = "failed"
    else:
        status = "unfinished"
    error = (failed or {}).get("error") or ("no decision in comparison.json" if comparison and status == "failed"
                                           else None)
    return {"job": job_dir.relative_to(sweep_dir).as_posix(), "dir": str(job_dir), "status": status, "error": error,
            "overrides": _overrides(job_dir), "train_n": (run.get("limits") or {}).get("train"),
            "comparison": comparison if status == "finished" else None}


def finished_cell(run_dir: Path, config: Mapping) -> bool:
    """True when run_dir holds a decided run of exactly this resolved config (a rerun of a sweep skips it)."""
    comparison, run = _optional(Path(run_dir) / "comparison.json"), _optional(Path(run_dir) / "run.json")
    if not comparison or not comparison.get("decision") or not run:
        return False
    if any(r.failed for r in Comparison.of(comparison).arms.values()):
        return False  # a failed arm is retried
    return run.get("config") == json.loads(json.dumps(config, default=str))


def collect_jobs(sweep_dir: Path) -> list[dict]:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise HarnessError(f"{sweep_dir}: not a folder")
    dirs = sorted({p.parent.parent for p in sweep_dir.glob("**/.hydra/overrides.yaml")} - {sweep_dir},
                  key=lambda p: [int(s) if s.isdigit() else s for s in p.relative_to(sweep_dir).parts])
    if not dirs:
        raise HarnessError(f"{sweep_dir}: no job folders (with .hydra/overrides.yaml) found; a sweep is written by "
                           f"harness -m … results_dir={sweep_dir}")
    return [_job(d, sweep_dir) for d in dirs]


def swept_keys(jobs: list[dict]) -> list[str]:
    """The overrides whose value differs between jobs (or that only some jobs set), in command-line order."""
    keys = list(dict.fromkeys(k for j in jobs for k in j["overrides"]))
    return [k for k in keys if len({j["overrides"].get(k) for j in jobs}) > 1]


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _rows(job: dict, keys: list[str]) -> list[dict]:
    base = {"job": job["job"], "status": job["status"], "overrides": {k: job["overrides"].get(k) for k in keys}}
    if job["comparison"] is None:
        return [{**base, "arm": None, "error": job["error"]}]
    c = Comparison.of(job["comparison"])
    decision = c.decision or {}
    verdict = decision.get("verdict") or {}
    primary = c.primary_metric
    priced = (decision.get("costs") or {}).get("arms") or {}
    rows = []
    for arm, r in c.arms.items():
        if r.is_replicate:
            continue
        if r.failed:
            rows.append({**base, "arm": arm, "error": r.error})
            continue
        interval = ((decision.get("intervals") or {}).get(arm) or {}).get(primary) or {}
        cost = priced.get(arm) or {}
        rows.append({**base, "arm": arm, "task": c.task, "metric": primary,
                     "value": interval.get("value", r.metrics.get(primary)), "ci": interval.get("ci"),
                     "model": (r.model or {}).get("name_or_path"), "fine_tuned": r.fine_tuned,
                     "per_1k_requests": cost.get("per_1k_requests"), "monthly_total": cost.get("monthly_total"),
                     "chosen": arm == verdict.get("choice"), "error": None})
    return rows


def numeric_knobs(jobs: list[dict], keys: list[str]) -> list[str]:
    done = [j for j in jobs if j["status"] == "finished"]
    return [k for k in keys if len({j["overrides"].get(k) for j in done}) > 1
            and all(_number(j["overrides"].get(k)) is not None for j in done)]


def learning_curves(jobs: list[dict], keys: list[str]) -> list[dict]:
    """The learning-curve reading per combination of the other swept overrides, when limit.train was swept."""
    if "limit.train" not in keys:
        return []
    others = [k for k in keys if k != "limit.train"]
    groups: dict[str, dict] = {}
    for j in jobs:
        if j["status"] == "finished" and j["train_n"] is not None:
            group = groups.setdefault(json.dumps({k: j["overrides"].get(k) for k in others}), {})
            group.setdefault(j["train_n"], j["comparison"])  # a repeated cell counts once
    out = []
    for group, runs in groups.items():
        if len(runs) >= 2 and len({c["task"] for c in runs.values()}) == 1:
            out.append({"group": json.loads(group), "curve": curve.learning_curve(dict(sorted(runs.items())))})
    return out


def build(sweep_dir: Path) -> dict:
    """Everything `harness sweep` reports, as JSON-ready data."""
    jobs = collect_jobs(sweep_dir)
    keys = swept_keys(jobs)
    rows = [row for j in jobs for row in _rows(j, keys)]
    verdicts = {}
    for j in jobs:
        if j["comparison"]:
            v = (j["comparison"].get("decision") or {}).get("verdict") or {}
            verdicts[j["job"]] = {"choice": v.get("choice"), "status": v.get("status"),
                                  "fine_tuning_justified": v.get("fine_tuning_justified"), "summary": v.get("summary")}
    counts = {s: sum(1 for j in jobs if j["status"] == s) for s in ("finished", "failed", "unfinished")}
    return {"sweep_dir": str(sweep_dir), "swept": keys, "numeric_knobs": numeric_knobs(jobs, keys), "counts": counts,
            "jobs": [{k: v for k, v in j.items() if k != "comparison"} for j in jobs], "rows": rows,
            "verdicts": verdicts, "learning_curves": learning_curves(jobs, keys)}

"""Read a results folder back: the evidence the decision needs, and the decision re-made from recorded JSON
(`harness report RUN_DIR` and the end of every run go through here). No model code."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

from harness.decision import cost as costs
from harness.decision import decide
from harness.errors import ConfigError, HarnessError
from harness.records import Comparison
from harness.results import read_json, write_json

RECORD_ONLY = ("review_after_months",)  # decision settings that are not the verdict rule's


def read_run_file(path: Path) -> Any:
    """A JSON file of a results folder; a missing or broken one is a one-line HarnessError."""
    try:
        return read_json(path)
    except FileNotFoundError:
        raise HarnessError(f"{path}: not found (is this a results folder of a finished run?)") from None
    except ValueError as e:
        raise HarnessError(f"{path}: not valid JSON ({e})") from None


def evidence(run_dir: Path, comparison: Comparison | Mapping) -> decide.Evidence:
    comparison = Comparison.of(comparison)
    records: dict[str, list] = {}
    order = None
    for name, result in comparison.arms.items():
        if not result.scored_here:
            continue
        per_example = read_run_file(run_dir / name / "metrics.json")["per_example"]
        order = order or list(per_example)
        missing = [i for i in order if i not in per_example]
        if missing:
            raise HarnessError(f"{run_dir / name / 'metrics.json'}: no score for held-out id {missing[0]!r}; arms "
                               f"can only be paired on the same ids")
        records[name] = [per_example[i] for i in order]
    checks = run_dir / "data_checks.json"
    control = run_dir / "control.json"
    return decide.Evidence(task_type=comparison.task_type, primary=comparison.primary_metric,
                           labels=comparison.labels, arms=comparison.arms, records=records,
                           data_checks=read_json(checks) if checks.exists() else {},
                           control=read_json(control) if control.exists() else {})


ALIASES = ("tolerance", "meaningful_difference")  # earlier names of `margin`, still read from older runs' run.json


def settings(raw: Mapping | None, seed: int) -> decide.Settings:
    """Validated decision settings. `tolerance` and `meaningful_difference`, the two earlier names of one concept,
    are read as `margin`: a tolerance above 0 was set on purpose and wins (conf/decision/default.yaml leaves both
    null); a meaningful_difference counts where no margin is set (an older run.json)."""
    raw = dict(raw or {})
    old = {k: raw.pop(k) for k in ALIASES if raw.get(k) is not None}
    for key, value in old.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"must be a number ≥ 0, got {value!r}", field=f"decision.{key}")
    for key in ALIASES:
        raw.pop(key, None)
    if old.get("tolerance"):
        raw["margin"] = old["tolerance"]
    elif "margin" not in raw and "meaningful_difference" in old:
        raw["margin"] = old["meaningful_difference"]
    known = set(decide.Settings.__dataclass_fields__) - {"seed"} | set(RECORD_ONLY)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})",
                          field=f"decision.{unknown[0]}")
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"must be a number ≥ 0, got {value!r}", field=f"decision.{key}")
    if not 0 < raw.get("alpha", 0.05) < 1 or not 0 < raw.get("confidence", 0.95) < 1:
        raise ConfigError("alpha and confidence must lie between 0 and 1", field="decision")
    if raw.get("max_failure_rate", 0.05) >= 1:
        raise ConfigError("must lie below 1 (a share of the held-out examples)", field="decision.max_failure_rate")
    if raw.get("resamples", 2000) < 100:
        raise ConfigError("use at least 100 bootstrap resamples (1000 or more for reporting)",
                          field="decision.resamples")
    raw["resamples"] = int(raw.get("resamples", 2000))
    for key in RECORD_ONLY:  # read by the decision record (harness/record.py), not by the rule
        raw.pop(key, None)
    return decide.Settings(**raw, seed=seed)


def decide_run(run_dir: Path, cost_raw: Mapping | None = None, decision_raw: Mapping | None = None, *,
               cost_config: costs.CostConfig | None = None, decision: decide.Settings | None = None,
               primary: str | None = None) -> dict:
    """Re-make the decision of a results folder from its JSON and write it into comparison.json. Cost and decision
    settings: those given validated (`cost_config`, `decision`: the runner's plan), else validated from `cost_raw`
    / `decision_raw`, else from what the run recorded in run.json. `primary`: decide on another metric every arm
    recorded instead of the one the run decided on (`harness report --metric`)."""
    run_dir = Path(run_dir)
    comparison = read_run_file(run_dir / "comparison.json")
    if primary is not None:
        choose_primary(run_dir, comparison, primary)
    if cost_config is None or decision is None:
        config = read_run_file(run_dir / "run.json").get("config", {})
        if cost_config is None:
            cost_config = costs.load_cost_config(cost_raw if cost_raw is not None else config.get("cost"))
        if decision is None:
            decision = settings(decision_raw if decision_raw is not None else config.get("decision"),
                                int(config.get("seed", 0)))
    comparison["decision"] = decide.decide(evidence(run_dir, comparison), cost_config, decision)
    write_json(run_dir / "comparison.json", comparison)
    return comparison


def check_primary(run_dir: Path, comparison: Mapping, metric: str) -> None:
    """A one-line HarnessError unless every arm the decision compares recorded `metric`."""
    c = Comparison.of(comparison)
    recorded = sorted(set.intersection(*[set(c.arms[a].metrics) for a in c.compared]) if c.compared else set())
    if metric not in recorded:
        raise HarnessError(f"{Path(run_dir) / 'comparison.json'}: not every arm recorded metric {metric!r}; choose "
                           f"one of {', '.join(recorded) or '(none)'}")


def choose_primary(run_dir: Path, comparison: dict, metric: str) -> None:
    """Make `metric` the metric the decision is made on. It must be one every compared arm recorded; the task's own
    primary metric is kept as `task_primary_metric` (dropped again when the task's metric is chosen back)."""
    check_primary(run_dir, comparison, metric)
    task_metric = comparison.get("task_primary_metric", comparison["primary_metric"])
    comparison["primary_metric"] = metric
    if metric == task_metric:
        comparison.pop("task_primary_metric", None)
    else:
        comparison["task_primary_metric"] = task_metric


def copy_decision_inputs(run_dir: Path, out: Path) -> list[Path]:
    """Copy the JSON a decision and its report are made from (the folder's *.json and each arm's *.json; not the
    predictions) from run_dir into out, a new or empty folder, so a re-decision leaves run_dir as it was."""
    run_dir, out = Path(run_dir), Path(out)
    comparison = read_run_file(run_dir / "comparison.json")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HarnessError(f"{out}: exists and is not an empty folder; give --out a new folder")
    copied = []
    for arm in ["", *Comparison.of(comparison).arms]:
        source = run_dir / arm
        for path in sorted(source.glob("*.json")) if source.is_dir() else []:
            target = out / arm / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied.append(target)
    return copied

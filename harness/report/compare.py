"""`harness compare RUN_A RUN_B`: what changed between two runs of a task (a retraining or drift review): code,
model, data, settings, each arm's primary metric (paired on the held-out ids both runs scored) and the verdict.
Pure: reads two results folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from harness import scoring
from harness.decision import stats
from harness.decision import uncertainty
from harness.errors import HarnessError
from harness.records import Comparison
from harness.results import read_json
from harness.rundata import read_run_file


def _load(run_dir: Path) -> tuple[dict, dict]:
    return read_run_file(run_dir / "comparison.json"), read_run_file(run_dir / "run.json")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _per_example(run_dir: Path, arm: str) -> dict[str, dict]:
    path = run_dir / arm / "metrics.json"
    return read_json(path)["per_example"] if path.is_file() else {}


def compare_runs(a: Path, b: Path, resamples: int = 2000, seed: int = 0) -> dict:
    a, b = Path(a), Path(b)
    (ca, ra), (cb, rb) = _load(a), _load(b)
    if ca["task_type"] != cb["task_type"] or ca["primary_metric"] != cb["primary_metric"]:
        raise HarnessError(f"{b}: a {cb['task_type']} task scored on {cb['primary_metric']}, but {a} is a "
                           f"{ca['task_type']} task scored on {ca['primary_metric']}: nothing to compare")
    primary = ca["primary_metric"]
    skip = ("results_dir", "run_dir")
    fa, fb = _flatten(ra.get("config", {})), _flatten(rb.get("config", {}))
    settings = [{"key": k, "a": fa.get(k), "b": fb.get(k)} for k in sorted(set(fa) | set(fb))
                if fa.get(k) != fb.get(k) and not k.startswith(skip)]
    data = {split: {"a": (ra.get("data_hashes") or {}).get(split), "b": (rb.get("data_hashes") or {}).get(split)}
            for split in sorted(set(ra.get("data_hashes") or {}) | set(rb.get("data_hashes") or {}))}
    arms = []
    arms_a, arms_b = Comparison.of(ca).arms, Comparison.of(cb).arms
    for arm in [x for x, r in arms_a.items() if x in arms_b and not r.is_replicate]:
        xa, xb = arms_a[arm], arms_b[arm]
        row = {"arm": arm, "a": xa.metrics.get(primary), "b": xb.metrics.get(primary),
               "error_a": xa.error, "error_b": xb.error}
        pa, pb = _per_example(a, arm), _per_example(b, arm)
        shared = [i for i in pa if i in pb]
        if shared and row["a"] is not None and row["b"] is not None:
            ra_, rb_ = [pa[i] for i in shared], [pb[i] for i in shared]
            idx = stats.bootstrap_indices(len(shared), resamples, seed)
            sa = uncertainty.metric_samples(ca["task_type"], ra_, idx, ca.get("labels", []))[primary]
            sb = uncertainty.metric_samples(cb["task_type"], rb_, idx, cb.get("labels", []))[primary]
            observed = (scoring.aggregate(cb["task_type"], rb_, cb.get("labels", []))[primary]
                        - scoring.aggregate(ca["task_type"], ra_, ca.get("labels", []))[primary])
            test = stats.paired_test(sb, sa, uncertainty.per_example_values(rb_, primary),
                                     uncertainty.per_example_values(ra_, primary), observed)
            changed = sum(1 for i in shared if _answer(pa[i]) != _answer(pb[i]))
            row.update({"paired_n": len(shared), "change": observed, "ci": test["ci"], "test": test["test"],
                        "p_value": test["p_value"], "changed_answers": changed})
        arms.append(row)
    verdict = {"a": ((ca.get("decision") or {}).get("verdict") or {}), "b": ((cb.get("decision") or {}).get("verdict") or {})}
    return {"a": str(a), "b": str(b), "task": {"a": ca["task"], "b": cb["task"]}, "primary_metric": primary,
            "git": {"a": (ra.get("git") or {}).get("sha"), "b": (rb.get("git") or {}).get("sha")},
            "model": {"a": ca.get("model", {}).get("name_or_path"), "b": cb.get("model", {}).get("name_or_path")},
            "data": data, "settings": settings, "arms": arms,
            "only_in_a": [x for x in arms_a if x not in arms_b], "only_in_b": [x for x in arms_b if x not in arms_a],
            "verdict": {k: {"choice": v.get("choice"), "fine_tuning_justified": v.get("fine_tuning_justified"),
                            "summary": v.get("summary")} for k, v in verdict.items()}}


def _answer(record: Mapping) -> Any:
    """What an example's record says the model answered (label, or per-field hits), to count changed answers."""
    for key in ("parsed", "fields", "token_f1", "exact_match"):
        if key in record:
            return record[key]
    return None

"""Learning curves: the runs of a sweep over training-set sizes (`harness -m … limit.train=16,64,256`) read back
from their results folders; each arm's primary metric with its interval per size, and where a fine-tuned arm
overtakes each arm without fine-tuning. Pure: results folders in, JSON and a figure out (`harness curve DIR`)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from harness.report import plots
from harness.report.display import cell
from harness.errors import HarnessError
from harness.records import Comparison
from harness.results import read_json, write_json
from harness.decision.verdict import find_pair

TRAIN, PER_CLASS = "training examples", "examples per class"  # the x-axis: limit.train or limit.per_class


def collect(sweep_dir: Path) -> dict:
    """{train size: comparison} for every finished run under sweep_dir (one level of Hydra job folders); the size is
    limit.per_class (examples per class) where the runs set it, else the number of train examples."""
    runs, axes = {}, set()
    for path in sorted(Path(sweep_dir).glob("**/comparison.json")):
        comparison = read_json(path)
        run = read_json(path.parent / "run.json") if (path.parent / "run.json").exists() else {}
        if "decision" not in comparison:
            continue
        limits = run.get("limits") or {}
        axes.add(PER_CLASS if "per_class" in limits else TRAIN)
        size = limits.get("per_class", limits.get("train"))
        if size in runs:
            raise HarnessError(f"{path.parent}: a second run with {size} train examples under {sweep_dir}; a curve "
                               f"needs one run per size (use a fresh results_dir per sweep)")
        runs[size] = comparison
    if len(runs) < 2:
        raise HarnessError(f"{sweep_dir}: found {len(runs)} finished run(s) with a decision; a learning curve needs "
                           f"at least two training-set sizes (harness -m … limit.train=16,64,256 results_dir=…)")
    if len(axes) > 1:
        raise HarnessError(f"{sweep_dir}: some runs set limit.per_class and some limit.train; a curve needs one axis")
    tasks = {c["task"] for c in runs.values()}
    if len(tasks) > 1:
        raise HarnessError(f"{sweep_dir}: runs of different tasks ({', '.join(sorted(tasks))}) cannot share a curve")
    return {"x_axis": axes.pop(), "runs": dict(sorted(runs.items()))}


def _point(comparison: Comparison, arm: str) -> dict | None:
    result = comparison.arms.get(arm)
    interval = (((comparison.decision or {}).get("intervals") or {}).get(arm) or {}).get(comparison.primary_metric)
    if result is None or result.failed or not interval:
        return None
    return {"value": interval["value"], "ci": interval["ci"], "fine_tuned": result.fine_tuned,
            "train_s": result.training.wall_s if result.training else None}


def _significant(comparison: Comparison, a: str, b: str) -> bool:
    test = find_pair((comparison.decision or {}).get("paired_tests") or [], a, b)
    return bool(test and test["significant"])


def learning_curve(runs: Mapping[int, Comparison | Mapping], x_axis: str = TRAIN) -> dict:
    runs = {n: Comparison.of(c) for n, c in runs.items()}
    sizes = list(runs)
    first = next(iter(runs.values()))
    arms = list(dict.fromkeys(a for c in runs.values() for a, r in c.arms.items() if not r.is_replicate))
    points = {arm: {n: _point(runs[n], arm) for n in sizes} for arm in arms}
    tuned = [a for a in arms if any(p and p["fine_tuned"] for p in points[a].values())]
    findings = []
    for t in tuned:
        for other in [a for a in arms if a not in tuned]:
            shared = [n for n in sizes if points[t][n] and points[other][n]]
            ahead = [n for n in shared if points[t][n]["value"] > points[other][n]["value"]]
            # the smallest size from which the tuned arm stays ahead at every larger size
            over = next((n for i, n in enumerate(shared) if all(m in ahead for m in shared[i:])), None)
            sig = next((n for n in shared if n in ahead and _significant(runs[n], t, other)), None)
            if over is None:
                text = f"{t} does not overtake {other} at any size up to {shared[-1] if shared else '?'}"
            else:
                text = (f"{t} overtakes {other} at {over} {x_axis}" +
                        (f" (significantly from {sig})" if sig is not None else " (not significantly at any size)"))
            findings.append({"tuned": t, "other": other, "overtakes_at": over, "significant_from": sig,
                             "summary": text})
    return {"task": first.task, "primary_metric": first.primary_metric, "x_axis": x_axis, "sizes": sizes,
            "heldout_n": {n: runs[n].heldout_n for n in sizes}, "arms": points, "findings": findings}


def write_curve(sweep_dir: Path) -> dict:
    sweep_dir = Path(sweep_dir)
    found = collect(sweep_dir)
    curve = learning_curve(found["runs"], found["x_axis"])
    write_json(sweep_dir / "learning_curve.json", curve)
    png = plots.learning_curve(curve)
    if png:
        (sweep_dir / "learning_curve.png").write_bytes(png)
    lines = [f"# {curve['task']}: learning curve ({curve['primary_metric']}, 95% bootstrap CI)", "",
             f"| {curve['x_axis']} | " + " | ".join(curve["arms"]) + " |",
             "|---:|" + "---:|" * len(curve["arms"])]
    for n in curve["sizes"]:
        lines.append(f"| {n} | " + " | ".join(cell(curve["arms"][arm][n]) for arm in curve["arms"]) + " |")
    lines += ["", *[f"- {f['summary']}" for f in curve["findings"]], "", "![learning curve](learning_curve.png)", ""]
    (sweep_dir / "learning_curve.md").write_text("\n".join(lines), encoding="utf-8")
    return curve

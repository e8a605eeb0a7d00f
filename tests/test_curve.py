"""Learning curves: the overtaking rule on constructed runs, and a real multirun sweep on the tiny task."""

from __future__ import annotations

import json
import subprocess
import sys

from harness.report.curve import learning_curve
from tests.conftest import ROOT, run_harness


def _run(n: int, scores: dict[str, float], significant: set[frozenset] = frozenset()) -> dict:
    strategies, intervals = {}, {}
    for arm, v in scores.items():
        tuned = arm == "lora"
        strategies[arm] = {"metrics": {"accuracy": v}, "training": {"wall_s": 10.0} if tuned else None}
        intervals[arm] = {"accuracy": {"value": v, "ci": [v - 0.05, v + 0.05]}}
    tests = [{"a": a, "b": b, "significant": frozenset((a, b)) in significant}
             for i, a in enumerate(scores) for b in list(scores)[i + 1:]]
    return {"task": "t", "primary_metric": "accuracy", "heldout_n": 100, "strategies": strategies,
            "decision": {"intervals": intervals, "paired_tests": tests}}


def test_overtaking_point_is_where_the_tuned_arm_stays_ahead():
    pair = frozenset(("lora", "rag"))
    runs = {16: _run(16, {"rag": 0.5, "lora": 0.3}), 64: _run(64, {"rag": 0.55, "lora": 0.6}),
            256: _run(256, {"rag": 0.6, "lora": 0.58}), 1024: _run(1024, {"rag": 0.62, "lora": 0.75}, {pair}),
            4096: _run(4096, {"rag": 0.63, "lora": 0.8}, {pair})}
    curve = learning_curve(runs)
    f = curve["findings"][0]
    assert (f["tuned"], f["other"]) == ("lora", "rag")
    assert f["overtakes_at"] == 1024 and f["significant_from"] == 1024  # 64 was ahead, but 256 fell back
    behind = learning_curve({16: _run(16, {"rag": 0.5, "lora": 0.3}), 64: _run(64, {"rag": 0.6, "lora": 0.5})})
    assert behind["findings"][0]["overtakes_at"] is None and "does not overtake" in behind["findings"][0]["summary"]


def test_multirun_over_train_sizes_then_harness_curve(tiny_model, tmp_path):
    out = tmp_path / "sweep"
    r = run_harness("-m", "task=tiny", f"results_dir={out}", "limit.train=12,20", "strategies=[prompt_only,lora]",
                    "strategies.prompt_only.shots=2", "strategies.lora.epochs=1", "strategies.lora.dev_fraction=0.2",
                    "forgetting.control=none", "decision.resamples=200", f"cache_dir={tmp_path / 'cache'}",
                    "model=hf", f"model.name_or_path={tiny_model}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    sizes = sorted(json.loads(p.read_text())["limits"]["train"] for p in out.glob("*/run.json"))
    assert sizes == [12, 20]
    r = subprocess.run([sys.executable, "-m", "harness.cli", "curve", str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    curve = json.loads((out / "learning_curve.json").read_text())
    assert curve["sizes"] == [12, 20] and set(curve["arms"]) == {"prompt_only", "lora"}
    assert curve["findings"][0]["tuned"] == "lora" and (out / "learning_curve.png").stat().st_size > 1000
    assert "lora" in (out / "learning_curve.md").read_text()
    r = subprocess.run([sys.executable, "-m", "harness.cli", "curve", str(out / "0")], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "at least two training-set sizes" in r.stdout + r.stderr

"""`harness report` on hand-built results folders: an older comparison.json (no margin, status or decision map)
still renders and re-decides with --margin / --error-cost / --volume; broken runs exit non-zero with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.report import render as report
from tests.conftest import ROOT

COST = {"example": False, "currency": "USD", "volume_per_month": 100_000, "horizon_months": 12,
        "self_hosted": {"price_per_hour": 3.6},
        "fine_tuning": {"retrain_every_months": 3, "upkeep_per_month": 100.0, "labelling_cost_per_example": 0.0}}
OLD_DECISION_SETTINGS = {"alpha": 0.05, "tolerance": 0.0, "meaningful_difference": 0.03, "power": 0.8,
                         "resamples": 500, "confidence": 0.95, "few_train_examples": 100, "forgetting_drop": 0.05}


def _arm(correct: list[int], speed: float, training: dict | None = None, failed: int = 0, invalid: int = 0) -> tuple:
    n = len(correct)
    per_example = {f"h{i}": {"correct": 0 if i < invalid else c, "invalid": int(i < invalid), "gold": "a",
                             "parsed": None if i < invalid else ("a" if c else "b")} for i, c in enumerate(correct)}
    acc = sum(r["correct"] for r in per_example.values()) / n
    result = {"summary": "", "n": n, "prepare_s": 0.0, "training": training,
              "metrics": {"accuracy": acc, "macro_f1": acc, "invalid_rate": invalid / n},
              "usage": {"n": n, "examples_per_s": speed, "input_tokens": {"mean": 100.0},
                        "output_tokens": {"mean": 1.0}, "latency_s": {"mean": 1 / speed}, "truncated": 0,
                        "failed": failed},
              "model": {"backend": "transformers", "name_or_path": "tiny"}}
    return result, per_example


def _folder(tmp: Path, arms: dict[str, tuple], old_decision: dict | None = None) -> Path:
    tmp.mkdir(parents=True)
    strategies = {}
    for name, (result, per_example) in arms.items():
        strategies[name] = result
        (tmp / name).mkdir()
        (tmp / name / "metrics.json").write_text(json.dumps({"per_example": per_example}))
    comparison = {"task": "hand_built", "task_type": "classification", "primary_metric": "accuracy",
                  "heldout_n": len(next(iter(arms.values()))[1]), "run_dir": str(tmp), "labels": ["a", "b"],
                  "model": {"name_or_path": "tiny"}, "strategies": strategies,
                  **({"decision": old_decision} if old_decision else {})}
    (tmp / "comparison.json").write_text(json.dumps(comparison))
    (tmp / "run.json").write_text(json.dumps({"seed": 0, "config": {"cost": COST, "decision": OLD_DECISION_SETTINGS,
                                                                    "seed": 0}}))
    return tmp


def _harness_report(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "report", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


# the demo's shape: retrieval best and dear to serve, lora 0.08 behind on 130 examples and cheaper per request
RETRIEVAL = [1] * 89 + [0] * 41
LORA = [1] * 65 + [0] * 24 + [1] * 14 + [0] * 27  # 79 right: 24 lost, 14 gained against retrieval
TRAINING = {"wall_s": 600.0, "train_examples": 400, "dev_examples": 50}
OLD_VERDICT = {"choice": "lora", "fine_tuning_justified": True, "summary": "Fine-tuning is justified on cost, not "
               "accuracy", "reasons": ["r"], "caveats": []}


def _as_older_code_wrote_it(run: Path) -> None:
    """Strip from comparison.json what this change added, and put back the older verdict (lora 'justified on cost')."""
    c = json.loads((run / "comparison.json").read_text())
    d = c["decision"]
    for key in ("against_best", "failures", "decision_map"):
        d.pop(key)
    for arm in d["costs"]["arms"].values():
        for key in ("error_cost_per_1k_requests", "error_cost_per_month", "cost_per_correct"):
            arm.pop(key)
    for key in ("error_cost", "review_cost"):
        d["costs"].pop(key)
    d["settings"] = {**OLD_DECISION_SETTINGS, "seed": 0}
    d["verdict"] = OLD_VERDICT
    (run / "comparison.json").write_text(json.dumps(c))


def test_an_older_comparison_renders_and_re_decides_with_the_new_options(tmp_path):
    run = _folder(tmp_path / "run", {"retrieval": _arm(RETRIEVAL, 2), "lora": _arm(LORA, 40, TRAINING)})
    assert _harness_report(run).returncode == 0
    _as_older_code_wrote_it(run)
    paths = report.write_reports(run)  # as recorded: no margin, status or map in it
    assert "Fine-tuning justified" in paths["html"].read_text()
    assert "Fine-tuning justified" in paths["md"].read_text()
    r = _harness_report(run, "--volume", "2e7")
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads((run / "comparison.json").read_text())["decision"]
    assert d["settings"]["margin"] == 0.03  # read from meaningful_difference in the old run.json
    assert d["verdict"]["choice"] == "retrieval" and d["verdict"]["status"] == "undecided"  # no longer "lora"
    assert d["against_best"]["lora"]["lower"] < -0.03
    html = (run / "report.html").read_text()
    assert "Undecided" in html and "Decision map" in html and (run / "decision_map.png").stat().st_size > 1000
    assert "Verdict: undecided" in r.stdout
    r = _harness_report(run, "--volume", "2e7", "--error-cost", "0.5", "--margin", "0.1")
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads((run / "comparison.json").read_text())["decision"]
    assert d["settings"]["margin"] == 0.1 and d["costs"]["error_cost"] == 0.5
    assert d["verdict"]["choice"] == "retrieval" and d["costs"]["p_cheapest"]["retrieval"] > 0.9
    assert d["decision_map"]["current"] == {"volume": 2e7, "error_cost": 0.5}


def test_every_arm_broken_exits_non_zero_with_one_line(tmp_path):
    run = _folder(tmp_path / "run", {"few": _arm([1] * 30, 10, invalid=3), "rag": _arm([1] * 30, 2, invalid=6)})
    r = _harness_report(run)
    assert r.returncode == 1
    lines = [x for x in (r.stdout + r.stderr).splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "No arm can be chosen" in lines[0] and "Traceback" not in r.stderr
    assert (run / "report.html").exists()  # what was measured is still reported


def test_an_arm_whose_every_request_failed_is_never_chosen_and_the_run_exits_non_zero(tmp_path):
    served = _arm([0] * 30, 50, failed=30, invalid=30)
    run = _folder(tmp_path / "run", {"served": served, "few": _arm([1] * 20 + [0] * 10, 10)})
    r = _harness_report(run)
    assert r.returncode == 1 and "every request of served failed" in r.stdout
    d = json.loads((run / "comparison.json").read_text())["decision"]
    assert d["verdict"]["choice"] == "few" and d["failures"]["served"]["wholesale"]


def _generation_arm(token_f1: list[float], fact_recall: list[float]) -> tuple:
    n = len(token_f1)
    per_example = {f"h{i}": {"token_f1": t, "fact_recall": f} for i, (t, f) in enumerate(zip(token_f1, fact_recall))}
    result = {"summary": "", "n": n, "prepare_s": 0.0, "training": None,
              "metrics": {"token_f1": sum(token_f1) / n, "fact_recall": sum(fact_recall) / n},
              "usage": {"n": n, "examples_per_s": 5.0, "input_tokens": {"mean": 100.0}, "output_tokens": {"mean": 9.0},
                        "latency_s": {"mean": 0.2}, "truncated": 0, "failed": 0},
              "model": {"backend": "transformers", "name_or_path": "tiny"}}
    return result, per_example


def test_report_decides_on_another_recorded_metric_and_keeps_the_tasks_own(tmp_path):
    # "wordy" shares the reference's phrasing (token F1) but states few facts; "facts" the other way round
    wordy = _generation_arm([0.5, 0.7] * 30, [0.1, 0.3] * 30)
    facts = _generation_arm([0.2, 0.4, 0.3] * 20, [0.6, 0.8, 0.7] * 20)
    run = _folder(tmp_path / "run", {"wordy": wordy, "facts": facts})
    c = json.loads((run / "comparison.json").read_text())
    (run / "comparison.json").write_text(json.dumps({**c, "task_type": "generation", "primary_metric": "token_f1",
                                                     "labels": []}))
    assert _harness_report(run).returncode == 0
    assert json.loads((run / "comparison.json").read_text())["decision"]["best"] == "wordy"

    r = _harness_report(run, "--metric", "fact_recall", "--out", tmp_path / "facts")
    assert r.returncode == 0, r.stdout + r.stderr
    c = json.loads((tmp_path / "facts" / "comparison.json").read_text())
    assert c["primary_metric"] == "fact_recall" and c["task_primary_metric"] == "token_f1"
    assert c["decision"]["best"] == "facts" and c["decision"]["verdict"]["choice"] == "facts"
    test, = c["decision"]["paired_tests"]
    assert test["significant"] and abs(abs(test["difference"]) - 0.5) < 1e-9  # fact_recall's difference, not F1's
    assert "the task's: token_f1" in (tmp_path / "facts" / "report.md").read_text()
    assert json.loads((run / "comparison.json").read_text())["primary_metric"] == "token_f1"  # the run is unchanged

    r = _harness_report(tmp_path / "facts", "--metric", "token_f1")  # back to the task's metric: no note left
    assert r.returncode == 0, r.stdout + r.stderr
    c = json.loads((tmp_path / "facts" / "comparison.json").read_text())
    assert c["primary_metric"] == "token_f1" and "task_primary_metric" not in c and c["decision"]["best"] == "wordy"

    r = _harness_report(run, "--metric", "bleu", "--out", tmp_path / "never")
    lines = [x for x in (r.stdout + r.stderr).splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and len(lines) == 1 and "choose one of fact_recall, token_f1" in lines[0]
    assert not (tmp_path / "never").exists()  # checked before anything was copied

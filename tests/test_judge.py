"""The optional LLM judge: verdict parsing, agreement by hand, and a run on a tiny model that records the judge's
marks per example, its agreement with the hand marks, its model, prompt and cost."""

import json

import pytest

from harness import judge
from tests.conftest import run_harness


def test_parse_and_kappa_by_hand():
    assert judge.parse("PASS") == 1 and judge.parse(" fail, because…") == 0 and judge.parse("maybe") is None
    assert judge.parse("FAIL? no: PASS") == 0  # the first verdict word counts
    # 4 items: agree on 3; p_human = 0.5, p_judge = 0.25 -> expected 0.5*0.25 + 0.5*0.75 = 0.5; kappa = 0.5
    assert judge.cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.5)
    assert judge.cohen_kappa([1, 1], [1, 1]) is None  # no variation: kappa undefined


def _task(folder):
    folder.mkdir()
    (folder / "task.yaml").write_text(
        "name: tj\ntype: generation\ninstruction: Rewrite politely.\nmetric: chrf\nmetrics: [rules_pass]\n"
        "rules:\n  - {name: polite, must: '(?i)polite'}\n  - {name: short, max_words: 5}\n"
        "judge:\n  rubric: PASS if the rewrite is polite and keeps the facts.\n  marked: marked.jsonl\n")
    for split, n in (("train", 6), ("heldout", 4)):
        (folder / f"{split}.jsonl").write_text("\n".join(
            json.dumps({"id": f"{split}{i}", "input": f"{split} draft number {i}", "target": f"Polite text {i}."})
            for i in range(n)))
    (folder / "marked.jsonl").write_text("\n".join(json.dumps(m) for m in [
        {"id": "m1", "example_id": "heldout0", "output": "Polite text 0.", "mark": "PASS"},
        {"id": "m2", "example_id": "heldout1", "output": "Go away.", "mark": "FAIL"},
        {"id": "m3", "example_id": "not-in-data", "output": "x", "mark": "PASS"}]))
    return folder


def test_a_run_with_the_judge_records_marks_agreement_and_cost(tiny_model, tmp_path):
    out = tmp_path / "run"
    r = run_harness(f"task_dir={_task(tmp_path / 'task')}", "strategies=[zero_shot]", f"results_dir={out}",
                    "judge.enabled=true", "model=hf", f"model.name_or_path={tiny_model}", "forgetting.control=none",
                    "checks.near_duplicates=false", "strategies.zero_shot.max_new_tokens=8")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    run_judge = json.loads((out / "judge.json").read_text())
    assert run_judge["model"]["backend"] == "transformers" and "PASS or FAIL" in run_judge["prompt"]["system"]
    agreement = run_judge["agreement"]
    assert agreement["n"] == 2 and 0 <= agreement["agreement"] <= 1  # the mark on an unknown example is skipped
    assert agreement["usage"]["input_tokens"] > 0 and agreement["usage"]["latency_s"] > 0
    arm = json.loads((out / "zero_shot" / "judge.json").read_text())
    assert set(arm["verdicts"]) == {f"heldout{i}" for i in range(4)} and arm["usage"]["input_tokens"] > 0
    metrics = json.loads((out / "zero_shot" / "metrics.json").read_text())
    assert all(e["judge_pass"] in (0, 1) for e in metrics["per_example"].values())
    comparison = json.loads((out / "comparison.json").read_text())
    assert "judge_pass" in comparison["strategies"]["zero_shot"]["metrics"]
    assert comparison["judge"]["agreement"]["n"] == 2
    assert "rules_pass" in comparison["strategies"]["zero_shot"]["metrics"]
    md = (out / "report.md").read_text()
    assert "## LLM judge" in md and "agreed with the people who marked them" in md
    assert "## Output rules" in md and "| polite |" in md


def test_the_judge_is_refused_for_a_task_without_a_rubric(tiny_model, tmp_path):
    r = run_harness("task=tiny", "judge.enabled=true", "model=hf", f"model.name_or_path={tiny_model}",
                    f"results_dir={tmp_path / 'run'}")
    assert r.returncode == 2 and "judge" in r.stdout and "tiny is classification" in r.stdout

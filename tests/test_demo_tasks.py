"""The generation-shaped demo tasks run offline end to end with their declared metrics in the table: a short run of
each on the packaged model through the llama.cpp backend (fast CPU generation)."""

import json

import pytest

from tests.conftest import run_harness

pytestmark = pytest.mark.slow

TASKS = {
    "supplier_intake": {"field_f1", "field_accuracy", "record_exact_match", "valid_json_rate", "schema_valid_rate"},
    "brand_rewrite": {"chrf", "rouge_l", "embedding_cosine", "rules_pass", "token_f1"},
    "case_summary": {"rouge_l", "chrf", "embedding_cosine", "rules_pass"},
    "hr_policy_qa": {"fact_recall", "answer_exact", "token_f1"},  # short answers: stop at a line, one sentence
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_demo_task_runs_offline_with_its_metrics(task, tmp_path):
    out = tmp_path / "run"
    r = run_harness(f"task={task}", "model=llama_cpp", "strategies=[prompt_only]", "strategies.prompt_only.shots=2",
                    "limit.heldout=4", "limit.train=30", f"results_dir={out}", "forgetting.control=none", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    comparison = json.loads((out / "comparison.json").read_text())
    arm = comparison["strategies"]["prompt_only"]
    assert arm["model"]["backend"] == "llama.cpp" and arm["n"] == 4
    assert TASKS[task] <= set(arm["metrics"]), sorted(arm["metrics"])
    assert all(0.0 <= v <= 1.0 for v in arm["metrics"].values())
    metrics = json.loads((out / "prompt_only" / "metrics.json").read_text())
    first = next(iter(metrics["per_example"].values()))
    if "rules_pass" in TASKS[task]:
        assert set(metrics["details"]["per_rule_pass_rate"]) == set(first["rules"])
    per_example_keys = {"schema_valid", "valid_json", "tp", "fp", "fn"} if task == "supplier_intake" else TASKS[task]
    assert per_example_keys <= set(first)  # kept per example, so the decision can pair arms on them
    assert comparison["primary_metric"] in r.stdout and (out / "report.html").exists()

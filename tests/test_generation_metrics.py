"""Generation and form metrics declared in task.yaml: rules, chrF, ROUGE-L, embedding cosine, JSON Schema."""

import json

import numpy as np
import pytest

from harness import scoring
from harness.decision import uncertainty
from harness.errors import TaskError
from harness.rules import check_all, load_rules
from harness.runner import embedding_cosines, score_strategy
from harness.task import load_task

RULES = load_rules([
    {"name": "no_bang", "must_not": "!"},
    {"name": "greeting", "must": r"^Hi [A-Z][a-z]+,"},
    {"name": "short", "max_words": 8},
    {"name": "issue", "section": "Issue", "max_words": 3},
], "task.yaml")


def test_rule_semantics():
    assert check_all(RULES, "Hi Ana,\nIssue: broken hub") == {"no_bang": 1, "greeting": 1, "short": 1, "issue": 1}
    assert check_all(RULES, "Hello!\nIssue: the hub is broken again today, sadly") == {
        "no_bang": 0, "greeting": 0, "short": 0, "issue": 0}
    assert check_all(RULES, "Hi Ana,\nIssue:   ")["issue"] == 0      # an empty section fails
    assert check_all(RULES, "Hi Ana, issue: x")["issue"] == 0         # the heading must start a line


@pytest.mark.parametrize("rule, field", [
    ({"name": "a", "must": "("}, "rules[0].must"),
    ({"name": "a"}, "rules[0]"),
    ({"name": "a", "must": "x", "must_not": "y"}, "rules[0]"),
    ({"name": "a", "max_words": 0}, "rules[0].max_words"),
    ({"name": "a", "must": "x", "max_words": 3}, "rules[0]"),
    ({"must": "x"}, "rules[0].name"),
])
def test_bad_rules_name_the_rule(rule, field):
    with pytest.raises(TaskError) as e:
        load_rules([rule], "task.yaml")
    assert e.value.field == field


def _generation_task(folder, extra: str):
    folder.mkdir()
    (folder / "task.yaml").write_text("name: g\ntype: generation\ninstruction: Rewrite.\n" + extra)
    for split in ("train", "heldout"):
        rows = [{"id": f"{split}{i}", "input": f"{split} draft {i}", "target": f"Hi Ana,\nthe answer is {i}"}
                for i in range(4)]
        (folder / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return folder


def test_generation_metrics_per_example_and_bootstrap_agree(tmp_path):
    task = load_task(_generation_task(tmp_path / "t", "metric: chrf\nmetrics: [rouge_l, rules_pass]\n"
                                      "rules:\n  - {name: greeting, must: '^Hi [A-Z][a-z]+,'}\n"
                                      "  - {name: no_bang, must_not: '!'}\n"))
    assert task.metrics == ("chrf", "rouge_l", "rules_pass")
    outputs = ["Hi Ana,\nthe answer is 0", "Hi Ana!\nthe answer is 1", "nothing like it", "Hi Bo,\nanswer 3"]
    records = {ex.id: {"output": o} for ex, o in zip(task.heldout, outputs)}
    result = score_strategy(task, records)
    per = [result["per_example"][ex.id] for ex in task.heldout]
    assert per[0]["chrf"] == pytest.approx(1.0) and per[0]["rouge_l"] == pytest.approx(1.0)
    assert per[2]["chrf"] < 0.3 and per[2]["rouge_l"] == 0.0
    assert [p["rules_pass"] for p in per] == [1, 0, 0, 1]
    assert per[1]["rules"] == {"greeting": 0, "no_bang": 0}
    assert result["details"]["per_rule_pass_rate"] == {"greeting": 0.5, "no_bang": 0.75}
    assert result["metrics"]["rules_pass"] == 0.5
    full = uncertainty.metric_samples("generation", per, np.arange(4)[None, :])
    for name, value in result["metrics"].items():
        assert full[name][0] == pytest.approx(value), name


def test_embedding_cosine_uses_the_best_reference():
    table = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [0.6, 0.8]}

    def encode(texts):
        return np.asarray([table[t] for t in texts])
    assert embedding_cosines(encode, ["a", "c"], ["b", ["b", "a"]]) == pytest.approx([0.0, 0.8])


def test_metric_that_needs_rules_is_refused_without_them(tmp_path):
    with pytest.raises(TaskError) as e:
        load_task(_generation_task(tmp_path / "t", "metric: rules_pass\n"))
    assert e.value.field == "metrics" and "rules" in str(e.value)


SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "amount"],
          "properties": {"name": {"type": "string"}, "amount": {"type": ["number", "null"]}}}


def _form_task(folder, heldout_target):
    folder.mkdir()
    (folder / "schema.json").write_text(json.dumps(SCHEMA))
    (folder / "task.yaml").write_text("name: f\ntype: extraction\ninstruction: Fill the form.\nfields: [name, amount]\n"
                                      "schema: schema.json\nmetrics: [schema_valid_rate]\n")
    (folder / "train.jsonl").write_text(json.dumps({"id": "t1", "input": "x", "target": {"name": "A", "amount": 2}}))
    (folder / "heldout.jsonl").write_text(
        json.dumps({"id": "h0", "input": "y", "target": {"name": "B", "amount": 1250.5}}) + "\n"
        + json.dumps({"id": "h1", "input": "z", "target": heldout_target}) + "\n")
    return folder


def test_form_numbers_compare_as_numbers_and_schema_validity_is_counted(tmp_path):
    task = load_task(_form_task(tmp_path / "t", {"name": "C", "amount": None}))
    outputs = ['{"name": "B", "amount": "1,250.50"}', '{"name": "C", "amount": null, "extra": 1}']
    result = scoring.score_arm(task, task.heldout, outputs)
    per = result["per_example"]
    assert per[0]["fields"] == {"name": 1, "amount": 1}        # "1,250.50" equals 1250.5 for a number field
    assert [p["schema_valid"] for p in per] == [0, 0]          # a string amount; an extra key
    assert result["metrics"]["schema_valid_rate"] == 0.0 and result["metrics"]["field_f1"] == 1.0


def test_gold_answer_that_breaks_the_schema_names_file_line_and_field(tmp_path):
    with pytest.raises(TaskError) as e:
        load_task(_form_task(tmp_path / "t", {"name": "C", "amount": "lots"}))
    assert e.value.line == 2 and e.value.field == "target.amount" and "heldout.jsonl" in str(e.value)


def test_invalid_schema_is_refused(tmp_path):
    folder = _form_task(tmp_path / "t", {"name": "C", "amount": 1})
    (folder / "schema.json").write_text(json.dumps({"type": "object", "properties": {"a": {"type": "nonsense"}}}))
    with pytest.raises(TaskError) as e:
        load_task(folder)
    assert e.value.field == "schema"

"""Task kinds (harness/kinds): the registry, each kind's metric catalogue as the README documents it, and a
fourth kind, registered here only, that goes through loading, prompts, scoring, the bootstrap and the decision
without an edit anywhere else."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from harness import datachecks, inference, kinds, scoring
from harness.lm import constrained
from harness.decision import cost
from harness.decision import decide
from harness.decision import uncertainty
from harness.errors import ConfigError, TaskError
from harness.kinds.base import Where, mean, no_meta, no_ratio
from harness.prompts import build_messages, pick_demos, target_text, template_from_config
from harness.runner import score_strategy
from harness.task import load_task

# The selectable metrics as README.md documents them ("Task types"; schema_valid_rate under "schema"), and the
# primary metric a task.yaml without `metric:` got before task kinds existed.
README_CATALOGUE = {
    "classification": ["accuracy", "macro_f1"],
    "extraction": ["field_f1", "field_accuracy", "record_exact_match", "valid_json_rate", "schema_valid_rate"],
    "generation": ["exact_match", "token_f1", "chrf", "rouge_l", "embedding_cosine", "rules_pass", "judge_pass",
                   "fact_recall", "answer_exact"],
}
DEFAULT_METRIC = {"classification": "accuracy", "extraction": "field_f1", "generation": "token_f1"}


def test_an_unknown_kind_is_a_one_line_config_error_naming_the_field():
    with pytest.raises(ConfigError) as e:
        kinds.get("regression")
    assert e.value.field == "type" and "\n" not in str(e.value)
    assert "regression" in str(e.value) and "classification, extraction, generation" in str(e.value)
    with pytest.raises(ConfigError, match="field 'task_type'"):
        kinds.get(None, field="task_type")
    assert kinds.of(SimpleNamespace(type="extraction")) is kinds.get("extraction")


@pytest.mark.parametrize("kind", sorted(README_CATALOGUE))
def test_each_kind_accepts_exactly_its_documented_metrics(tmp_path, kind):
    extra = {"classification": "labels: [a, b]\n", "extraction": "fields: [name]\n", "generation": ""}[kind]
    target = {"classification": "a", "extraction": {"name": "x"}, "generation": "x"}[kind]
    for split in ("train", "heldout"):
        (tmp_path / f"{split}.jsonl").write_text(json.dumps({"id": split, "input": split, "target": target}) + "\n")

    def load(metric_line: str):
        (tmp_path / "task.yaml").write_text(f"type: {kind}\ninstruction: Do it.\n{extra}{metric_line}")
        return load_task(tmp_path)

    assert load("").metric == DEFAULT_METRIC[kind]
    needs = {"rules_pass": "rules:\n  - {name: short, max_words: 9}\n", "judge_pass": "judge: {rubric: Good.}\n",
             "schema_valid_rate": "schema: {type: object}\n"}
    for metric in README_CATALOGUE[kind]:
        assert load(f"metric: {metric}\n{needs.get(metric, '')}").metric == metric
    others = {m for k, ms in README_CATALOGUE.items() if k != kind for m in ms}
    for metric in sorted(others):
        with pytest.raises(TaskError, match=rf"field 'metric': unknown metric '{metric}' for {kind}"):
            load(f"metric: {metric}\n")


def test_a_key_of_another_kind_is_refused_naming_it(tmp_path):
    (tmp_path / "task.yaml").write_text("type: generation\ninstruction: Answer.\nlabels: [a, b]\n")
    with pytest.raises(TaskError, match=r"field 'labels': only classification tasks have this key \(type is "
                                        r"generation\)"):
        load_task(tmp_path)


def test_register_refuses_an_incomplete_kind_a_taken_name_and_a_clashing_metric():
    with pytest.raises(ConfigError, match="lacks .*score"):
        kinds.register(SimpleNamespace(name="half", metrics=()))
    with pytest.raises(ConfigError, match="already registered"):
        kinds.register(_numeric(name="generation"))
    with pytest.raises(ConfigError, match="'accuracy' .* averages 'hit'"):
        kinds.register(_numeric(mean_of={"accuracy": "hit"}))
    assert "numeric" not in kinds.names()


# ------------------------------------------------------------------ a fourth kind, defined only in this test
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _numeric(**overrides) -> SimpleNamespace:
    """Answers are numbers; an output is right when its first number is within 1% of the gold one."""

    def parse_target(settings, value, where: Where):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise where.error(f"not a number: {value!r}") from None

    def score(task, examples, outputs):
        per_example = []
        for ex, out in zip(examples, outputs):
            found = NUMBER.search(out)
            got = float(found.group()) if found else None
            per_example.append({"within_1pct": int(got is not None and abs(got - ex.target) <= abs(ex.target) / 100),
                                "unreadable": int(got is None)})
        return {"metrics": aggregate(per_example, ()) if per_example else {}, "per_example": per_example,
                "details": {}}

    def aggregate(records, labels):
        return {"within_1pct": mean(records, "within_1pct"), "unreadable_rate": mean(records, "unreadable")}

    kind = SimpleNamespace(
        name="numeric", metrics=("within_1pct",), default_metric="within_1pct",
        mean_of={"within_1pct": "within_1pct", "unreadable_rate": "unreadable"}, proxy_of={}, labelled=False,
        keys=frozenset(), breakdown=None, read_spec=lambda raw, path: {}, parse_target=parse_target,
        example_meta=no_meta, answer_text=lambda task, target: f"{target:g}",
        constraint=lambda task, mode, insist, field: None, score=score, aggregate=aggregate, bootstrap=no_ratio)
    for key, value in overrides.items():
        setattr(kind, key, value)
    return kind


@pytest.fixture
def numeric(tmp_path):
    kind = kinds.register(_numeric())
    folder: Path = tmp_path / "prices"
    folder.mkdir()
    (folder / "task.yaml").write_text("type: numeric\ninstruction: Give the total price.\n")
    train = [("a", "5 limes at 0.2", 1), ("b", "2 kiwis at 3", 6)]
    heldout = [("a", "2 apples at 1.50", 3), ("b", "3 pears at 2", 6), ("c", "1 melon at 4.25", 4.25),
               ("d", "4 figs at 0.5", 2)]
    for split, chosen in (("train", train), ("heldout", heldout)):
        (folder / f"{split}.jsonl").write_text("".join(
            json.dumps({"id": f"{split}-{i}", "input": text, "target": gold}) + "\n" for i, text, gold in chosen))
    yield kind, folder
    kinds.unregister("numeric")


def test_a_fourth_kind_needs_only_its_registration(numeric):
    kind, folder = numeric
    task = load_task(folder)
    assert task.type == "numeric" and task.metric == "within_1pct" and task.heldout[2].target == 4.25
    # prompts, demonstrations, decoding and constraints ask the kind
    demos = pick_demos(task, 2, seed=0)
    messages = build_messages(task, template_from_config(None), task.heldout[0], demos)
    assert [m["content"] for m in messages if m["role"] == "assistant"] == [target_text(task, d.target)
                                                                              for d in demos]
    assert target_text(task, 6.0) == "6"
    assert inference.uses_scoring(task, "auto") is False
    assert constrained.wanted(task, "auto", "generate", "arm") is None
    assert datachecks.label_balance(task) is None
    # the runner's scoring path and the single entry
    outputs = {"heldout-a": "3.00", "heldout-b": "It is 7", "heldout-c": "4.25 total", "heldout-d": "two"}
    result = score_strategy(task, {i: {"output": o} for i, o in outputs.items()})
    assert result["metrics"] == {"within_1pct": 0.5, "unreadable_rate": 0.25}
    assert [r["within_1pct"] for r in result["per_example"].values()] == [1, 0, 1, 0]
    # the bootstrap and the decision read the recorded task_type string
    records = list(result["per_example"].values())
    samples = uncertainty.metric_samples("numeric", records, np.arange(4)[None, :])
    assert {m: s[0] for m, s in samples.items()} == pytest.approx(result["metrics"])
    assert scoring.per_example_key("numeric", "within_1pct") == "within_1pct"
    by_arm = {"a": records, "b": [{"within_1pct": 1, "unreadable": 0}] * 4}
    usage = {"examples_per_s": 10.0, "input_tokens": {"mean": 50.0}, "output_tokens": {"mean": 2.0},
             "latency_s": {"mean": 0.1}, "truncated": 0}
    arms = {name: {"metrics": scoring.aggregate("numeric", recs), "n": 4, "prepare_s": 1.0, "usage": usage}
            for name, recs in by_arm.items()}
    ev = decide.Evidence(task_type="numeric", primary="within_1pct", labels=(), arms=arms, records=by_arm)
    cfg = {"example": False, "currency": "USD", "volume_per_month": 1000, "horizon_months": 12,
           "self_hosted": {"price_per_hour": 3.6},
           "fine_tuning": {"retrain_every_months": 3, "upkeep_per_month": 0.0, "labelling_cost_per_example": 0.0}}
    verdict = decide.decide(ev, cost.load_cost_config(cfg), decide.Settings(resamples=200))
    assert verdict["best"] == "b"


def test_a_fourth_kind_reads_its_gold_answers_with_file_and_line(numeric):
    kind, folder = numeric
    (folder / "heldout.jsonl").write_text(json.dumps({"id": "x", "input": "?", "target": "lots"}) + "\n")
    with pytest.raises(TaskError, match=r"heldout.jsonl:1: field 'target': not a number: 'lots'"):
        load_task(folder)

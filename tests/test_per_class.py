"""limit.per_class: N train examples of each label, nested and seeded; refused with limit.train or on a task
without labels; learning curves over it name their x-axis "examples per class"."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from harness.report.curve import write_curve
from harness.errors import HarnessError, TaskError
from harness.task import load_task
from tests.conftest import ROOT
from tests.test_curve import _run

TRIAGE = ROOT / "tasks" / "support_triage"


def test_per_class_keeps_n_of_each_label_nested_and_seeded():
    full = load_task(TRIAGE)
    available = Counter(ex.target for ex in full.train)
    assert len(set(available.values())) > 1  # unbalanced: limit.train would not give N per label
    small, large = (load_task(TRIAGE, limit_per_class=n, sample="stratified", sample_seed=3) for n in (3, 10))
    for subset, n in ((small, 3), (large, 10)):
        assert Counter(ex.target for ex in subset.train) == {k: min(n, v) for k, v in available.items()}
        order = [ex.id for ex in full.train]
        assert [ex.id for ex in subset.train] == sorted((ex.id for ex in subset.train), key=order.index)
    assert {ex.id for ex in small.train} < {ex.id for ex in large.train}  # nested: a curve adds examples
    assert small.heldout == full.heldout  # held-out untouched
    other_seed = load_task(TRIAGE, limit_per_class=3, sample="stratified", sample_seed=4)
    assert {ex.id for ex in other_seed.train} != {ex.id for ex in small.train}
    first = load_task(TRIAGE, limit_per_class=3, sample="first")
    for label in available:
        assert [ex.id for ex in first.train if ex.target == label] == \
               [ex.id for ex in full.train if ex.target == label][:3]


def test_per_class_is_refused_with_limit_train_and_without_labels():
    with pytest.raises(TaskError, match="limit.per_class and limit.train cannot be combined"):
        load_task(TRIAGE, limit_per_class=3, limit_train=20)
    with pytest.raises(TaskError, match="limit.per_class needs a classification task"):
        load_task(ROOT / "tasks" / "supplier_intake", limit_per_class=3)


def _write_run(folder, n: int, lora: float, limits: dict) -> None:
    folder.mkdir()
    (folder / "comparison.json").write_text(json.dumps(_run(n, {"rag": 0.5, "lora": lora})))
    (folder / "run.json").write_text(json.dumps({"limits": limits}))


def test_curve_over_examples_per_class_names_its_axis(tmp_path):
    _write_run(tmp_path / "0", 2, 0.3, {"train": 24, "heldout": 100, "per_class": 2})
    _write_run(tmp_path / "1", 8, 0.7, {"train": 90, "heldout": 100, "per_class": 8})
    curve = write_curve(tmp_path)
    assert curve["sizes"] == [2, 8] and curve["x_axis"] == "examples per class"
    assert curve["findings"][0]["summary"].startswith("lora overtakes rag at 8 examples per class")
    assert "| examples per class |" in (tmp_path / "learning_curve.md").read_text()
    _write_run(tmp_path / "2", 50, 0.7, {"train": 50, "heldout": 100})
    with pytest.raises(HarnessError, match="one axis"):
        write_curve(tmp_path)

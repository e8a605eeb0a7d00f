"""prompt_only's default `shots: auto`: one demonstration per label (balanced, seeded) while the prompt fits 60% of
the model's context; when it cannot show every label it warns and records its coverage."""

from __future__ import annotations

import pytest

from harness.errors import ConfigError
from harness.lm.hf import TransformersLM
from harness.strategy import PrepareContext
from harness.task import load_task
from strategies.prompt_only import PromptOnly
from tests.conftest import ROOT


def _prepare(lm, tmp_path, seed=0, **kwargs):
    task = load_task(ROOT / "tasks" / "support_triage", limit_heldout=4)
    arm = PromptOnly(**kwargs)
    report = arm.prepare(PrepareContext(task, lm, tmp_path, tmp_path, seed, lambda d, t: (lambda n=1: None)))
    return task, arm, report


def test_auto_shows_one_demonstration_per_label_seeded(tiny_model, tmp_path):
    lm = TransformersLM(str(tiny_model), max_length=4000)  # the tiny tokenizer needs ~2100 tokens for 10 labels
    task, arm, report = _prepare(lm, tmp_path)
    shown = [ex.target for ex in task.train if ex.id in report["demo_ids"]]
    assert sorted(shown) == sorted(task.labels)  # every label once
    assert report["demo_coverage"]["labels_shown"] == report["demo_coverage"]["labels"] == len(task.labels)
    assert report["demo_coverage"]["budget_tokens"] == int(lm.max_length * 0.6)
    assert report["summary"].startswith(f"auto {len(task.labels)}-shot balanced")
    _, _, again = _prepare(lm, tmp_path)
    _, _, other = _prepare(lm, tmp_path, seed=5)
    assert again["demo_ids"] == report["demo_ids"] and set(other["demo_ids"]) != set(report["demo_ids"])
    _, _, fixed = _prepare(lm, tmp_path, shots=3)  # a number still works (sweeps over shots)
    assert len(fixed["demo_ids"]) == 3 and fixed["demo_coverage"]["labels_shown"] == 3


def test_auto_within_a_small_context_warns_and_records_coverage(tiny_model, tmp_path, capsys):
    lm = TransformersLM(str(tiny_model), max_length=2000)
    task, arm, report = _prepare(lm, tmp_path)
    coverage, budget = report["demo_coverage"], 1200
    assert coverage["budget_tokens"] == budget and 0 < coverage["labels_shown"] < coverage["labels"]
    assert f"({coverage['labels_shown']} of {coverage['labels']} labels shown)" in report["summary"]
    assert "shows" in capsys.readouterr().out
    # the most demonstrations that fit: the longest held-out prompt fits, one more demonstration would not
    longest = max(task.heldout, key=lambda ex: len(ex.input))
    demos = [next(ex for ex in task.train if ex.id == i) for i in report["demo_ids"]]
    assert lm.count_tokens(arm._prompt(longest)) <= budget
    extra = next(ex for ex in task.train if ex.target not in {d.target for d in demos})
    assert lm.count_tokens(arm._prompt(longest, [*demos, extra])) > budget


@pytest.mark.parametrize("shots", [-1, "many", 2.5])
def test_bad_shots_are_refused(shots):
    with pytest.raises(ConfigError, match="shots"):
        PromptOnly(shots=shots)

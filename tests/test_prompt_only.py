from collections import Counter

import pytest

from harness.errors import ConfigError
from harness.inference import max_new_tokens_for
from harness.lm.hf import TransformersLM
from harness.strategy import PrepareContext
from harness.task import load_task
from harness.prompts import pick_demos, target_text
from strategies.prompt_only import PromptOnly
from tests.conftest import ROOT


def test_demos_are_balanced_and_seeded():
    task = load_task(ROOT / "tasks" / "tiny")
    demos = pick_demos(task, 6, seed=3)
    assert Counter(d.target for d in demos) == {"positive": 3, "negative": 3}
    assert [d.id for d in demos] == [d.id for d in pick_demos(task, 6, seed=3)]
    assert [d.id for d in demos] != [d.id for d in pick_demos(task, 6, seed=4)]
    assert len(pick_demos(task, 100, seed=0)) == len(task.train)


def test_prompt_only_predicts_valid_labels_with_calibration(tiny_model, tmp_path):
    task = load_task(ROOT / "tasks" / "tiny")
    lm = TransformersLM(str(tiny_model))
    strategy = PromptOnly(shots=4, calibrate=True)
    ctx = PrepareContext(task, lm, tmp_path, tmp_path, seed=0, progress=lambda d, t: (lambda n=1: None))
    report = strategy.prepare(ctx)
    assert len(report["demo_ids"]) == 4 and abs(sum(report["calibration"]["label_prior"].values()) - 1) < 1e-6
    preds = strategy.predict(task.heldout[:5])
    assert [p.id for p in preds] == [ex.id for ex in task.heldout[:5]]
    assert all(p.output in task.labels for p in preds)
    # every demonstration is in the prompt as sent
    demo_inputs = [ex.input for ex in task.train if ex.id in report["demo_ids"]]
    assert all(d in preds[0].prompt for d in demo_inputs)
    # calibrated scores: the label prior is divided out (scores shift by -log prior)
    uncal = PromptOnly(shots=4, calibrate=False)
    uncal.prepare(ctx)
    raw = uncal.predict(task.heldout[:1])[0].scores
    prior = report["calibration"]["label_prior"]
    import math
    for label in task.labels:
        assert preds[0].scores[label] == __import__("pytest").approx(raw[label] - math.log(prior[label]), abs=1e-3)


def test_generate_mode_outputs_text(tiny_model, tmp_path):
    task = load_task(ROOT / "tasks" / "tiny")
    lm = TransformersLM(str(tiny_model))
    strategy = PromptOnly(shots=0, decode="generate", max_new_tokens=5)
    strategy.prepare(PrepareContext(task, lm, tmp_path, tmp_path, 0, lambda d, t: (lambda n=1: None)))
    preds = strategy.predict(task.heldout[:2])
    assert all(isinstance(p.output, str) and p.usage["output_tokens"] <= 5 for p in preds)


def test_max_new_tokens_auto_is_the_longest_training_answer_plus_a_quarter_and_8():
    class CharCounter:  # one token per character, and a record of what was counted
        def __init__(self):
            self.counted = []

        def count_tokens(self, text: str) -> int:
            self.counted.append(text)
            return len(text)

    task = load_task(ROOT / "tasks" / "tiny")
    lm = CharCounter()
    longest = max(len(target_text(task, ex.target)) for ex in task.train)
    assert max_new_tokens_for(task, lm, "auto", "arm") == max(16, int(longest * 1.25) + 8)
    assert sorted(lm.counted) == sorted({target_text(task, ex.target) for ex in task.train})  # each label once
    assert max_new_tokens_for(task, lm, 40, "arm") == 40
    for bad in (0, -3, "many", True, 2.5):
        with pytest.raises(ConfigError, match="positive whole number or auto"):
            max_new_tokens_for(task, lm, bad, "arm")

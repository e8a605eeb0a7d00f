"""Prompt-only arm: the task instruction, demonstrations from train, and (for classification) log-likelihood label
scoring with optional contextual calibration (Zhao et al. 2021, "Calibrate Before Use").

`shots: auto` shows one demonstration per label (balanced, seeded) while the prompt fits AUTO_BUDGET of the model's
context; when not every label fits, the arm warns and records how many labels its prompt covers. On a task without
labels `auto` means AUTO_OTHER demonstrations (within the same budget). A number k shows k, balanced."""

from __future__ import annotations

import math
from typing import Sequence

from harness.lm import constrained as constrained_decoding
from harness import inference, kinds
from harness.console import status
from harness.errors import ConfigError
from harness.prompts import build_messages, pick_demos, template_from_config
from harness.strategy import PrepareContext, Prediction, Strategy
from harness.task import Example

AUTO_BUDGET = 0.6  # share of the model's context the prompt with automatic demonstrations may fill
AUTO_OTHER = 10    # `auto` on a task without labels


class PromptOnly(Strategy):
    """Zero-shot (shots=0) or few-shot prompting of the arm's model."""

    def __init__(self, shots: int | str = "auto", calibrate: bool = False, decode: str = "auto",
                 max_new_tokens: int | str = "auto",
                 seed: int | None = None, template: dict | None = None, constrained: bool | str = False,
                 name: str = "prompt_only"):
        if shots != "auto" and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 0):
            raise ConfigError(f"must be a whole number ≥ 0 or auto, got {shots!r}", field=f"strategies.{name}.shots")
        self.shots, self.calibrate, self.decode = shots, bool(calibrate), decode
        self.max_new_tokens, self.seed, self.name = max_new_tokens, seed, name
        self.constrained = constrained_decoding.parse_setting(constrained, name)
        self.constraint = None
        self.template = template_from_config(template)
        self.demos: list[Example] = []
        self.prior: list[float] | None = None
        self.coverage: dict | None = None

    def describe(self) -> dict:
        return {"kind": "prompt_only", "shots": self.shots, "calibrate": self.calibrate, "decode": self.decode,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed,
                "template": {"system": self.template.system, "user": self.template.user},
                **constrained_decoding.describe(self.constraint)}

    def summary(self) -> str:
        k = len(self.demos)
        mode = f"{k}-shot" if k else "zero-shot"
        if self.shots == "auto":
            mode = f"auto {mode}"
        if kinds.of(self.task).labelled and k:
            mode += " balanced"
        if self.coverage and self.coverage["labels_shown"] < self.coverage["labels"]:
            mode += f" ({self.coverage['labels_shown']} of {self.coverage['labels']} labels shown)"
        if self.mode == "score":
            mode += ", label scoring" + (" + calibration" if self.calibrate else "")
        else:
            mode += ", generation" + (" (constrained)" if self.constraint else "")
        return mode

    def check(self, task, lm) -> dict:
        """Refuse, before any arm runs, what the task or the arm's backend cannot do."""
        self.mode = inference.resolve_decode(task, lm, self.decode, self.name)
        self.new_tokens = inference.max_new_tokens_for(task, lm, self.max_new_tokens, self.name)
        self.constraint, self.constraint_report = constrained_decoding.setup(task, lm, self.constrained, self.mode,
                                                                             self.name)
        return {"decode": self.mode, "max_new_tokens": self.new_tokens, "constrained": self.constraint_report}

    def prepare(self, ctx: PrepareContext) -> dict:
        self.task, self.lm = ctx.task, ctx.lm
        if ctx.checked is None:  # not run by the runner's plan
            self.check(self.task, self.lm)
        seed = ctx.seed if self.seed is None else self.seed
        self.demos, budget = self._pick(seed)
        self._prompt(self.task.heldout[0])  # a template error surfaces here, before any prediction
        report = {"demo_ids": [d.id for d in self.demos], "seed": seed, "summary": self.summary(),
                  "decode": self.mode, "max_new_tokens": self.new_tokens, "constrained": self.constraint_report}
        if self.coverage:
            report["demo_coverage"] = {**self.coverage, "budget_tokens": budget}
        if self.calibrate and self.mode != "score":
            report["calibration"] = "not applicable: calibration corrects label scores, and this arm generates"
        elif self.calibrate:
            free = [Example(f"content-free-{i}", text or " ", None) for i, text in enumerate(inference.CONTENT_FREE)]
            self.prior = inference.label_prior(self.task, self.lm, [self._prompt(ex) for ex in free])
            report["calibration"] = {"content_free_inputs": list(inference.CONTENT_FREE),
                                     "label_prior": dict(zip(self.task.labels, (math.exp(p) for p in self.prior)))}
        return report

    def _pick(self, seed: int) -> tuple[list[Example], int | None]:
        """The demonstrations (and, for `auto`, the prompt token budget they had to fit), with label coverage."""
        task, labels = self.task, self.task.labels
        if self.shots != "auto":
            demos, budget = pick_demos(task, self.shots, seed), None
        else:
            demos = pick_demos(task, len({ex.target for ex in task.train}) if labels else AUTO_OTHER, seed)
            context = self.lm.context_length
            budget = int(context * AUTO_BUDGET) if context else None
            if budget:  # the most demonstrations (in their seeded order) whose prompt fits, for the longest input
                longest = max(task.heldout, key=lambda ex: len(ex.input))
                fits = lambda k: self.lm.count_tokens(self._prompt(longest, demos[:k])) <= budget  # noqa: E731
                low, high = 0, len(demos)
                while low < high:
                    mid = (low + high + 1) // 2
                    low, high = (mid, high) if fits(mid) else (low, mid - 1)
                demos = demos[:low]
        if labels:
            shown, trained = len({d.target for d in demos}), len({ex.target for ex in task.train})
            self.coverage = {"labels_shown": shown, "labels": len(labels), "labels_in_train": trained,
                             "shots": self.shots}
            if self.shots == "auto" and shown < len(labels):
                why = (f"one demonstration per label does not fit {budget} prompt tokens ({AUTO_BUDGET:.0%} of the "
                       f"context)" if shown < trained else f"{len(labels) - trained} label(s) have no train example")
                status(f"[yellow]warning:[/yellow] {self.name}: shots=auto shows {shown} of {len(labels)} labels "
                       f"({why}); the others are only named in the instruction")
        return demos, budget

    def _prompt(self, example: Example, demos: Sequence[Example] | None = None) -> str:
        return self.lm.render(build_messages(self.task, self.template, example,
                                             self.demos if demos is None else demos))

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        return inference.predict(self.task, self.lm, examples, [self._prompt(ex) for ex in examples],
                                 decode=self.mode, max_new_tokens=self.new_tokens, prior=self.prior,
                                 constraint=self.constraint)

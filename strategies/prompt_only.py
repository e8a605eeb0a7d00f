"""Prompt-only arm: the task instruction, optionally k demonstrations from train, and (for classification)
log-likelihood label scoring with optional contextual calibration (Zhao et al. 2021, "Calibrate Before Use")."""

from __future__ import annotations

import math
from typing import Sequence

from harness import inference
from harness.errors import ConfigError
from harness.prompts import build_messages, pick_demos, template_from_config
from harness.strategy import PrepareContext, Prediction
from harness.task import Example


class PromptOnly:
    """Zero-shot (shots=0) or few-shot prompting of the arm's model."""

    def __init__(self, shots: int = 0, calibrate: bool = False, decode: str = "auto",
                 max_new_tokens: int | str = "auto",
                 seed: int | None = None, template: dict | None = None, name: str = "prompt_only"):
        if shots < 0:
            raise ConfigError(f"must be ≥ 0, got {shots}", field=f"strategies.{name}.shots")
        self.shots, self.calibrate, self.decode = int(shots), bool(calibrate), decode
        self.max_new_tokens, self.seed, self.name = max_new_tokens, seed, name
        self.template = template_from_config(template)
        self.demos: list[Example] = []
        self.prior: list[float] | None = None

    def describe(self) -> dict:
        return {"kind": "prompt_only", "shots": self.shots, "calibrate": self.calibrate, "decode": self.decode,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed,
                "template": {"system": self.template.system, "user": self.template.user}}

    def summary(self) -> str:
        mode = f"{self.shots}-shot" if self.shots else "zero-shot"
        if self.task.type == "classification" and self.shots:
            mode += " balanced"
        if self.mode == "score":
            mode += ", label scoring" + (" + calibration" if self.calibrate else "")
        else:
            mode += ", generation"
        return mode

    def check(self, task, lm) -> None:
        """Refuse, before any arm runs, what the task or the arm's backend cannot do."""
        self.mode = inference.resolve_decode(task, lm, self.decode, self.name)
        self.new_tokens = inference.max_new_tokens_for(task, lm, self.max_new_tokens, self.name)

    def prepare(self, ctx: PrepareContext) -> dict:
        self.task, self.lm = ctx.task, ctx.lm
        self.check(self.task, self.lm)
        seed = ctx.seed if self.seed is None else self.seed
        self.demos = pick_demos(self.task, self.shots, seed)
        self._prompt(self.task.heldout[0])  # a template error surfaces here, before any prediction
        report = {"demo_ids": [d.id for d in self.demos], "seed": seed, "summary": self.summary(),
                  "decode": self.mode, "max_new_tokens": self.new_tokens}
        if self.calibrate and self.mode != "score":
            report["calibration"] = "not applicable: calibration corrects label scores, and this arm generates"
        elif self.calibrate:
            free = [Example(f"content-free-{i}", text or " ", None) for i, text in enumerate(inference.CONTENT_FREE)]
            self.prior = inference.label_prior(self.task, self.lm, [self._prompt(ex) for ex in free])
            report["calibration"] = {"content_free_inputs": list(inference.CONTENT_FREE),
                                     "label_prior": dict(zip(self.task.labels, (math.exp(p) for p in self.prior)))}
        return report

    def _prompt(self, example: Example) -> str:
        return self.lm.render(build_messages(self.task, self.template, example, self.demos))

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        return inference.predict(self.task, self.lm, examples, [self._prompt(ex) for ex in examples],
                                 decode=self.mode, max_new_tokens=self.new_tokens, prior=self.prior)

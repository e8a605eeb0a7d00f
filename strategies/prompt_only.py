"""Prompt-only arm: the task instruction, optionally k demonstrations from train, and (for classification)
log-likelihood label scoring with optional contextual calibration (Zhao et al. 2021, "Calibrate Before Use")."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Sequence

from harness.errors import ConfigError
from harness.lm import GENERATE, SCORE
from harness.prompts import PromptTemplate, build_messages
from harness.strategy import PrepareContext, Prediction
from harness.task import Example, Task

CONTENT_FREE = ("N/A", "[MASK]", "")  # content-free inputs used to measure the label prior


def pick_demos(task: Task, k: int, seed: int) -> list[Example]:
    """k demonstrations from train, seeded; for classification balanced across labels (round robin over
    shuffled labels), then shuffled so the last demonstration's label is not predictable."""
    rng = random.Random(seed)
    pool = list(task.train)
    if k <= 0:
        return []
    if task.type != "classification":
        return rng.sample(pool, min(k, len(pool)))
    by_label: dict[str, list[Example]] = defaultdict(list)
    for ex in pool:
        by_label[ex.target].append(ex)
    for exs in by_label.values():
        rng.shuffle(exs)
    order = [label for label in task.labels if by_label[label]]
    rng.shuffle(order)
    demos: list[Example] = []
    while len(demos) < min(k, len(pool)):
        for label in order:
            if by_label[label] and len(demos) < k:
                demos.append(by_label[label].pop())
    rng.shuffle(demos)
    return demos


def log_softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    z = top + math.log(sum(math.exp(v - top) for v in values))
    return [v - z for v in values]


class PromptOnly:
    """Zero-shot (shots=0) or few-shot prompting of the arm's model."""

    def __init__(self, shots: int = 0, calibrate: bool = False, decode: str = "auto", max_new_tokens: int = 128,
                 seed: int | None = None, template: dict | None = None, name: str = "prompt_only"):
        if shots < 0:
            raise ConfigError(f"must be ≥ 0, got {shots}", field=f"strategies.{name}.shots")
        if decode not in ("auto", "score", "generate"):
            raise ConfigError(f"must be auto, score or generate, got {decode!r}", field=f"strategies.{name}.decode")
        self.shots, self.calibrate, self.decode = int(shots), bool(calibrate), decode
        self.max_new_tokens, self.seed, self.name = int(max_new_tokens), seed, name
        self.template = PromptTemplate(**(template or {}))
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
        if self._scoring():
            mode += ", label scoring" + (" + calibration" if self.calibrate else "")
        return mode

    def _scoring(self) -> bool:
        return self.task.type == "classification" and self.decode != "generate"

    def prepare(self, ctx: PrepareContext) -> dict:
        self.task, self.lm = ctx.task, ctx.lm
        need = SCORE if self._scoring() else GENERATE
        if need not in self.lm.capabilities:
            raise ConfigError(f"arm {self.name!r} needs '{need}' but its model backend cannot do it")
        if self.calibrate and not self._scoring():
            raise ConfigError("calibration needs label scoring (classification with decode: score or auto)",
                              field=f"strategies.{self.name}.calibrate")
        seed = ctx.seed if self.seed is None else self.seed
        self.demos = pick_demos(self.task, self.shots, seed)
        self._prompt(self.task.heldout[0])  # a template error surfaces here, before any prediction
        report = {"demo_ids": [d.id for d in self.demos], "seed": seed, "summary": self.summary()}
        if self.calibrate:
            labels = [self.task.text_of(label) for label in self.task.labels]
            free = [Example(f"content-free-{i}", text or " ", None) for i, text in enumerate(CONTENT_FREE)]
            scored = self.lm.score_choices([self._prompt(ex) for ex in free], labels)
            probs = [[math.exp(v) for v in log_softmax(s.logprobs)] for s in scored]
            self.prior = [math.log(sum(col) / len(col)) for col in zip(*probs)]
            report["calibration"] = {"content_free_inputs": list(CONTENT_FREE),
                                     "label_prior": dict(zip(self.task.labels, (math.exp(p) for p in self.prior)))}
        return report

    def _prompt(self, example: Example) -> str:
        return self.lm.render(build_messages(self.task, self.template, example, self.demos))

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        prompts = [self._prompt(ex) for ex in examples]
        if not self._scoring():
            gens = self.lm.generate(prompts, self.max_new_tokens)
            return [Prediction(ex.id, g.text, p, {"input_tokens": g.input_tokens, "output_tokens": g.output_tokens,
                                                  "latency_s": g.latency_s, "truncated": g.truncated})
                    for ex, p, g in zip(examples, prompts, gens)]
        labels = list(self.task.labels)
        scored = self.lm.score_choices(prompts, [self.task.text_of(label) for label in labels])
        preds = []
        for ex, prompt, s in zip(examples, prompts, scored):
            values = log_softmax(s.logprobs)
            if self.prior is not None:
                values = [v - p for v, p in zip(values, self.prior)]
            best = max(range(len(labels)), key=values.__getitem__)
            preds.append(Prediction(ex.id, labels[best], prompt,
                                    {"input_tokens": s.input_tokens, "output_tokens": 0,
                                     "scored_tokens": s.choice_tokens, "latency_s": s.latency_s,
                                     "truncated": s.truncated},
                                    scores={label: round(v, 5) for label, v in zip(labels, values)}))
        return preds

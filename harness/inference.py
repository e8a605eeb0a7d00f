"""Prompts → predictions through the arm's model, shared by every strategy: label scoring (with an optional
calibration prior) for classification, generation otherwise. Strategies build prompts; this turns them into
Prediction records the same way for all of them."""

from __future__ import annotations

import math
import time
from typing import Sequence

from harness import kinds
from harness.console import status
from harness.errors import ConfigError
from harness.lm import GENERATE, SCORE
from harness.prompts import target_text
from harness.strategy import Prediction
from harness.task import Example, Task

CONTENT_FREE = ("N/A", "[MASK]", "")  # content-free inputs for contextual calibration (Zhao et al. 2021)
DECODE_MODES = ("auto", "score", "generate")


def log_softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    z = top + math.log(sum(math.exp(v - top) for v in values))
    return [v - z for v in values]


def uses_scoring(task: Task, decode: str) -> bool:
    """Whether an arm with this (resolved) decode mode scores labels rather than generating."""
    return kinds.of(task).labelled and decode in ("auto", "score")


def resolve_decode(task: Task, lm, decode: str, arm: str) -> str:
    """The decode mode an arm runs with on its backend ('score' or 'generate'), refusing before any work what the
    task or the backend cannot do. `auto` scores labels where the backend can, and generates and parses (invalid
    answers counted) where it cannot, e.g. a chat API without continuation log-probabilities."""
    field = f"strategies.{arm}.decode"
    if decode not in DECODE_MODES:
        raise ConfigError(f"must be one of {', '.join(DECODE_MODES)}, got {decode!r}", field=field)
    labelled = kinds.of(task).labelled  # answers from a label set: scored per label where the backend can
    if decode == "score" and not labelled:
        raise ConfigError(f"label scoring needs a classification task ({task.name} is {task.type})", field=field)
    backend = lm.describe().get("backend", "?")
    if labelled and decode != "generate":
        if SCORE in lm.capabilities:
            return "score"
        if decode == "score":
            raise ConfigError(f"arm {arm!r} asks for label scoring, which its {backend} backend cannot do "
                              f"(set {field}=generate)", field=field)
    if GENERATE not in lm.capabilities:
        raise ConfigError(f"arm {arm!r} needs generation, which its {backend} backend cannot do", field=field)
    return "generate"


def max_new_tokens_for(task: Task, lm, value, arm: str) -> int:
    """The generation budget of an arm: a number, or `auto` = room for the longest training target as the arm's
    model tokenizes it, plus a quarter and 8 tokens (a fixed budget cut long answers: JSON forms, rewrites)."""
    if value == "auto":
        texts = {target_text(task, ex.target) for ex in task.train}  # each distinct answer once (labels repeat)
        longest = max((lm.count_tokens(text) for text in texts), default=16)
        return max(16, int(longest * 1.25) + 8)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"must be a positive whole number or auto, got {value!r}",
                          field=f"strategies.{arm}.max_new_tokens")
    return value


def answer_end(task: Task) -> dict:
    """The task's `stop` strings and `max_sentences`, as keyword arguments of `LM.generate` (only those set, so a
    backend written before them keeps working on tasks without them)."""
    end = {}
    if task.stop:
        end["stop"] = list(task.stop)
    if task.max_sentences:
        end["max_sentences"] = task.max_sentences
    return end


def label_prior(task: Task, lm, prompts: Sequence[str]) -> list[float]:
    """log of each label's mean probability over content-free prompts (the calibration prior)."""
    labels = [task.text_of(label) for label in task.labels]
    probs = [[math.exp(v) for v in log_softmax(s.logprobs)] for s in lm.score_choices(prompts, labels)]
    return [math.log(sum(col) / len(col)) for col in zip(*probs)]


def predict(task: Task, lm, examples: Sequence[Example], prompts: Sequence[str], *, decode: str = "auto",
            max_new_tokens: int = 128, prior: Sequence[float] | None = None,
            retrieved: Sequence[list[dict]] | None = None, extra_usage: Sequence[dict] | None = None,
            constraint=None) -> list[Prediction]:
    """`constraint`: a prepared harness.lm.constrained.Constraint the generation follows (None: unconstrained)."""
    retrieved = retrieved or [None] * len(examples)
    extra_usage = extra_usage or [{}] * len(examples)
    if not uses_scoring(task, decode):
        gens = lm.generate(prompts, max_new_tokens, **answer_end(task),
                           **({"constraint": constraint} if constraint is not None else {}))
        unfinished = sum(1 for g in gens if getattr(g, "grammar_unfinished", False))
        if unfinished:
            status(f"[yellow]warning:[/yellow] {unfinished} constrained answer(s) reached max_new_tokens "
                   f"({max_new_tokens}) before their grammar closed: they can still be invalid")
        return [Prediction(ex.id, g.text, p, {"input_tokens": g.input_tokens, "output_tokens": g.output_tokens,
                                              "latency_s": g.latency_s, "truncated": g.truncated,
                                              **({"failed": g.error} if g.error else {}),
                                              **_grammar_usage(g, constraint), **u}, retrieved=r)
                for ex, p, g, r, u in zip(examples, prompts, gens, retrieved, extra_usage)]
    labels = list(task.labels)
    scored = lm.score_choices(prompts, [task.text_of(label) for label in labels])
    preds = []
    for ex, prompt, s, r, u in zip(examples, prompts, scored, retrieved, extra_usage):
        values = log_softmax(s.logprobs)
        if prior is not None:
            values = [v - p for v, p in zip(values, prior)]
        best = max(range(len(labels)), key=values.__getitem__)
        preds.append(Prediction(ex.id, labels[best], prompt,
                                {"input_tokens": s.input_tokens, "output_tokens": 0, "scored_tokens": s.choice_tokens,
                                 "latency_s": s.latency_s, "truncated": s.truncated, **u},
                                scores={label: round(v, 5) for label, v in zip(labels, values)}, retrieved=r))
    return preds


def _grammar_usage(gen, constraint) -> dict:
    """Usage entries of a constrained generation: its grammar time (where the backend measures it apart) and
    whether it was cut before its grammar closed."""
    if constraint is None:
        return {}
    out = {"constrained": constraint.kind}
    if getattr(gen, "grammar_s", None) is not None:
        out["grammar_s"] = gen.grammar_s
    if getattr(gen, "grammar_unfinished", False):
        out["grammar_unfinished"] = True
    return out


def predict_built(task: Task, lm, examples: Sequence[Example], build, *, decode: str = "auto",
                  max_new_tokens: int = 128, constraint=None) -> list[Prediction]:
    """Predict with a prompt builder (`build(examples) -> prompts, retrieved, usage`), whose time (retrieval,
    packing) is part of each example's end-to-end latency."""
    start = time.perf_counter()
    prompts, retrieved, usage = build(examples)
    share = (time.perf_counter() - start) / max(1, len(examples))
    preds = predict(task, lm, examples, prompts, decode=decode, max_new_tokens=max_new_tokens,
                    retrieved=retrieved if any(r is not None for r in retrieved) else None, extra_usage=usage,
                    constraint=constraint)
    for p in preds:
        p.usage["latency_s"] += share
    return preds

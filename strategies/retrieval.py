"""Retrieval-augmented arm. Two modes:

- knowledge: the task's knowledge split (chunked by tokens) is indexed; the top-k passages go into the prompt with
  their ids, packed whole inside a token budget (a passage that does not fit is dropped and counted, never cut);
- demonstrations: the train inputs are indexed; the k nearest train examples to each input become its few-shot
  demonstrations, most similar last.

`RetrievalPrompts` is the prompt builder that the combined (LoRA + retrieval) arm reuses.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Sequence

from harness.lm import constrained as constrained_decoding
from harness import inference
from harness.console import status
from harness.errors import ConfigError
from harness.prompts import PromptTemplate, build_messages, pick_demos, template_from_config
from harness.strategy import PrepareContext, Prediction, Strategy
from harness.task import Example

if TYPE_CHECKING:  # the retriever is built by Hydra from the arm's config and handed in
    from harness.retriever import Retriever

MODES = ("auto", "knowledge", "demonstrations")
# Knowledge mode: where the passages go. `system`: after the instruction, before the answer-format demonstrations,
# so the question turn has the shape of every demonstration turn and the model answers at their length; `question`:
# in the question's turn, after demonstrations shown without passages (the model tends to go on until the limit).
LAYOUTS = ("system", "question")
CONTEXT_HEADER = "Reference passages (cite nothing else):"


def pack_passages(passages: Sequence[tuple[str, str, float]], count_tokens, budget: int) -> tuple[list, int]:
    """Keep whole passages (id, text, score) in rank order while they fit the token budget; count the rest."""
    kept, used, dropped = [], 0, 0
    for pid, text, score in passages:
        cost = count_tokens(f"[{pid}] {text}\n\n")
        if used + cost <= budget:
            kept.append((pid, text, score))
            used += cost
        else:
            dropped += 1
    return kept, dropped


class RetrievalPrompts:
    """Builds retrieval-augmented prompts for a task: knowledge passages or nearest-neighbour demonstrations."""

    def __init__(self, retriever: Retriever, mode: str, k: int, budget_tokens: int, template: PromptTemplate,
                 arm: str, shots: int = 0, layout: str = "question"):
        if mode not in MODES:
            raise ConfigError(f"must be one of {', '.join(MODES)}, got {mode!r}", field=f"strategies.{arm}.mode")
        if layout not in LAYOUTS:
            raise ConfigError(f"must be one of {', '.join(LAYOUTS)}, got {layout!r}", field=f"strategies.{arm}.layout")
        self.layout = layout
        if k < 1:
            raise ConfigError(f"must be ≥ 1, got {k}", field=f"strategies.{arm}.k")
        self.retriever, self.mode, self.k, self.budget, self.template, self.arm = retriever, mode, k, budget_tokens, \
            template, arm
        self.shots, self.demos = int(shots), []

    def describe(self) -> dict:
        return {"mode": self.mode, "k": self.k, "budget_tokens": self.budget, "shots": self.shots,
                "retriever": self.retriever.describe(),
                "template": {"system": self.template.system, "user": self.template.user},
                # named when not the layout every earlier run had, so their fingerprints and adapters stay valid
                **({"layout": self.layout} if self.layout != "question" else {})}

    def prepare(self, ctx: PrepareContext) -> dict:
        task = self.task = ctx.task
        self.lm = ctx.lm
        if self.mode == "auto":
            self.mode = "knowledge" if task.split("knowledge") else "demonstrations"
        if self.mode == "knowledge":
            if not task.split("knowledge"):
                raise ConfigError(f"task {task.name!r} has no knowledge split, which mode 'knowledge' needs "
                                  f"(add knowledge.jsonl, or use mode: demonstrations)", field=f"strategies.{self.arm}.mode")
            docs = [(d.id, (str(d.meta["title"]) + "\n" if d.meta.get("title") else "") + d.input)
                    for d in task.split("knowledge")]
            self.demos = pick_demos(task, self.shots, ctx.seed)  # answer-format demonstrations (no passages)
            passages, split = self.retriever.chunk(docs)
        else:
            self.by_id = {ex.id: ex for ex in task.train}
            passages, split = self.retriever.whole([(ex.id, ex.input) for ex in task.train]), 0  # never chunked
        start = time.perf_counter()
        self.corpus = self.retriever.build(passages, ctx.cache_dir, ctx.progress)
        if self.k > len(passages):
            status(f"[yellow]warning:[/yellow] {self.arm}: k={self.k} is larger than the corpus "
                   f"({len(passages)} passages); using k={len(passages)}")
        return {"mode": self.mode, "passages": len(passages), "documents_chunked": split,
                "demo_ids": [d.id for d in self.demos],
                "k_used": min(self.k, len(passages)), "index": {**self.corpus.built,
                                                                 "seconds": time.perf_counter() - start}}

    def build(self, examples: Sequence[Example], exclude_self: bool = False) -> tuple[list[str], list[list[dict]], list[dict]]:
        """Prompts, retrieved records and usage additions (retrieval time, dropped passages) per example.
        exclude_self: for prompts of train examples (fine-tuning), an example is never its own demonstration."""
        start = time.perf_counter()
        leave_out = exclude_self and self.mode == "demonstrations"
        hits = self.retriever.search(self.corpus, [ex.input for ex in examples], self.k + leave_out)
        if leave_out:
            hits = [[h for h in found if h[0].doc_id != ex.id][: self.k] for ex, found in zip(examples, hits)]
        share = (time.perf_counter() - start) / max(1, len(examples))
        prompts, retrieved, usage = [], [], []
        for ex, found in zip(examples, hits):
            if self.mode == "knowledge":
                kept, dropped = pack_passages([(p.id, p.text, s) for p, s in found], self.lm.count_tokens, self.budget)
                context = CONTEXT_HEADER + "\n\n" + "\n\n".join(f"[{pid}] {text}" for pid, text, _ in kept)
                demos = [d for d in self.demos if d.id != ex.id]
                messages = (build_messages(self.task, self.template, ex, demos, system_context=context)
                            if self.layout == "system" else build_messages(self.task, self.template, ex, demos,
                                                                           context=context))
                packed = {pid for pid, _, _ in kept}
                retrieved.append([{"id": p.id, "doc_id": p.doc_id, "score": round(s, 5), "packed": p.id in packed}
                                  for p, s in found])
                usage.append({"retrieval_s": share, "passages_dropped": dropped})
            else:
                demos = [self.by_id[p.doc_id] for p, _ in reversed(found)]  # most similar closest to the input
                messages = build_messages(self.task, self.template, ex, demos)
                retrieved.append([{"id": p.id, "doc_id": p.doc_id, "score": round(s, 5), "packed": True}
                                  for p, s in found])
                usage.append({"retrieval_s": share})
            prompts.append(self.lm.render(messages))
        return prompts, retrieved, usage


class Retrieval(Strategy):
    """Retrieval-augmented prompting of the arm's model."""

    def __init__(self, retriever: Retriever, mode: str = "auto", k: int = 5, budget_tokens: int = 1024,
                 shots: int = 0, decode: str = "auto", max_new_tokens: int | str = "auto",
                 template: dict | None = None, layout: str = "question", constrained: bool | str = False,
                 name: str = "retrieval"):
        self.name, self.decode, self.max_new_tokens = name, decode, max_new_tokens
        self.constrained = constrained_decoding.parse_setting(constrained, name)
        self.constraint = None
        self.prompts = RetrievalPrompts(retriever, mode, int(k), int(budget_tokens), template_from_config(template),
                                        name, shots, layout)

    def describe(self) -> dict:
        return {"kind": "retrieval", **self.prompts.describe(), "decode": self.decode,
                "max_new_tokens": self.max_new_tokens, **constrained_decoding.describe(self.constraint)}

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
        report = {**self.prompts.prepare(ctx), "decode": self.mode, "max_new_tokens": self.new_tokens,
                  "constrained": self.constraint_report}
        what = "passages" if self.prompts.mode == "knowledge" else "nearest demonstrations"
        report["summary"] = f"top-{report['k_used']} {what}" + (
            f" ≤ {self.prompts.budget} tokens" if self.prompts.mode == "knowledge" else "") + (
            f", {len(self.prompts.demos)}-shot" if self.prompts.demos else "") + (
            ", constrained" if self.constraint else "")
        return report

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        return inference.predict_built(self.task, self.lm, examples, self.prompts.build, decode=self.mode,
                                       max_new_tokens=self.new_tokens, constraint=self.constraint)


"""Combined arm: the retrieval arm's prompt builder composed with the LoRA arm's training and inference. The adapter
is trained on retrieval-augmented prompts (nearest demonstrations exclude the example itself), so training and
inference prompts match."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.prompts import template_from_config
from strategies.lora import LoRA
from strategies.retrieval import RetrievalPrompts

if TYPE_CHECKING:
    from harness.retriever import Retriever


def Combined(retriever: "Retriever", mode: str = "auto", k: int = 5, budget_tokens: int = 1024,
             template: dict | None = None, name: str = "combined", **lora_settings) -> LoRA:  # noqa: N802
    prompts = RetrievalPrompts(retriever, mode, int(k), int(budget_tokens), template_from_config(template), name)
    return LoRA(prompts=prompts, name=name, **lora_settings)

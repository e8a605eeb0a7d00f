"""The one model interface every strategy uses. Backends (transformers today; llama.cpp and HTTP later) sit behind
it, chosen by the model config's `_target_`; a strategy never loads a model itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

SCORE, GENERATE, TRAIN = "score", "generate", "train"


@dataclass
class Generation:
    text: str
    input_tokens: int
    output_tokens: int
    latency_s: float      # this example's share of its batch's wall time
    truncated: bool = False


@dataclass
class ChoiceScores:
    logprobs: list[float]  # one summed log-probability per choice, in the order given
    input_tokens: int
    choice_tokens: int     # continuation tokens scored for this prompt (all choices)
    latency_s: float
    truncated: bool = False


class LM(Protocol):
    capabilities: frozenset[str]

    def render(self, messages: Sequence[dict]) -> str:
        """Chat messages → the prompt text exactly as the model sees it (chat template or plain format)."""

    def count_tokens(self, text: str) -> int: ...

    def score_choices(self, prompts: Sequence[str], choices: Sequence[str]) -> list[ChoiceScores]:
        """Log-likelihood of each choice as the continuation of each prompt (batched, shared prefixes)."""

    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()) -> list[Generation]:
        """Greedy continuation of each prompt, cut at end of turn or a stop string."""

    def describe(self) -> dict:
        """Model id, backend, device, dtype, parameter count: recorded with every result."""

"""The one model interface every strategy uses. Backends sit behind it, chosen by the model config's `_target_`
(conf/model/): transformers (harness/lm/hf.py: training, label scoring, any Hugging Face id), llama.cpp in-process
(harness/lm/llamacpp.py: fast CPU generation for GGUF files) and an OpenAI-compatible HTTP client
(harness/lm/http.py: APIs, vLLM, llama.cpp's server). A strategy never loads a model itself and never knows which
backend it has; it asks `capabilities` and the backend refuses what it cannot do before any work."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping, Protocol, Sequence

SCORE, GENERATE, TRAIN = "score", "generate", "train"
PLAIN_ANSWER_END = "\n\n"  # what the plain format writes after an answer (its line end before the next turn)
ANSWER_PROBE = "ANSWERPROBE"  # an assistant answer rendered through a chat template to find what follows it


@dataclass
class Generation:
    text: str
    input_tokens: int
    output_tokens: int
    latency_s: float      # this example's share of its batch's wall time
    truncated: bool = False
    error: str | None = None  # a counted failure (malformed or empty response, prompt over the server's context)
    grammar_s: float | None = None   # constrained decoding: this example's time in the grammar's token masks
    grammar_unfinished: bool = False  # constrained decoding: cut at max_new_tokens before its grammar closed


@dataclass
class ChoiceScores:
    logprobs: list[float]  # one summed log-probability per choice, in the order given
    input_tokens: int
    choice_tokens: int     # continuation tokens scored for this prompt (all choices)
    latency_s: float
    truncated: bool = False


# A sentence ends at . ! or ? (closing quotes or brackets may follow) before white space and a capital, digit or
# opening quote, or at a line break; "e.g." and the like do not end one.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*(?=[ \t]+[A-Z0-9\"'(\[])|(?<=\S)(?=[ \t]*\n\s*\S)")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "approx.", "incl.", "mr.", "mrs.", "ms.", "dr.", "st.", "vs.")


def _sentence_ends(text: str) -> list[int]:
    """Offsets where each sentence of `text` ends, except the last (still open) one."""
    return [m.end() for m in _SENTENCE_END.finditer(text)
            if not text[:m.start()].lower().endswith(_ABBREVIATIONS)]


def _stop_at(text: str, stop: Sequence[str]) -> int | None:
    """Offset of the earliest stop string after the answer's first visible character (leading white space never
    ends an answer), or None."""
    lead = len(text) - len(text.lstrip())
    found = [text.find(s, lead + 1) for s in stop if s]
    found = [i for i in found if i != -1]
    return min(found) if found else None


def answer_done(text: str, stop: Sequence[str] = (), max_sentences: int | None = None) -> bool:
    """Whether a growing answer has ended: a stop string, or the start of sentence max_sentences + 1."""
    if stop and _stop_at(text, stop) is not None:
        return True
    return bool(max_sentences) and len(_sentence_ends(text.strip())) >= max_sentences


def cut_answer(text: str, stop: Sequence[str] = (), max_sentences: int | None = None) -> str:
    """The answer up to its first stop string and at most `max_sentences` sentences, stripped. Every backend ends
    its answers with this, so an answer reads the same whichever backend produced it."""
    at = _stop_at(text, stop) if stop else None
    text = (text if at is None else text[:at]).strip()
    if max_sentences:
        ends = _sentence_ends(text)
        if len(ends) >= max_sentences:
            text = text[:ends[max_sentences - 1]].strip()
    return text


def plain_prompt(messages: Sequence[dict]) -> str:
    """The prompt format of models without a chat template: instruction, then `input\nAnswer: target` turns."""
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(m["content"] + "\n\n")
        elif m["role"] == "user":
            parts.append(m["content"] + "\nAnswer:")
        else:
            parts.append(" " + m["content"] + PLAIN_ANSWER_END)
    return "".join(parts)


def end_of_answer(suffix_ids: Sequence[int], stop_ids, special_ids) -> list[int]:
    """The tokens a chat template writes after an answer, up to and including the first one the model stops at
    (end of turn / EOS, e.g. `<|im_end|>` of `<|im_end|>\n`), else the first special token; [] when none."""
    for group in (set(stop_ids), set(special_ids)):
        k = next((i for i, t in enumerate(suffix_ids) if t in group), None)
        if k is not None:
            return list(suffix_ids[:k + 1])
    return []


MIN_SHARED_PREFIX = 16  # tokens; below this a shared-prefix pass is not worth its bookkeeping


def common_prefix(seqs: Sequence[Sequence[int]], limit: int, minimum: int = MIN_SHARED_PREFIX) -> int:
    """Length of the token prefix all sequences share (at most `limit`), or 0 when shorter than `minimum`."""
    first, k = seqs[0], 0
    while k < limit and all(s[k] == first[k] for s in seqs):
        k += 1
    return k if k >= minimum else 0


def cut_middle(ids: list[int], budget: int) -> list[int]:
    """Keep the first and last tokens of a too-long prompt (instruction and input), dropping the middle."""
    head = budget // 2
    return ids[:head] + ids[len(ids) - (budget - head):]


class LM(Protocol):
    """Every member a strategy or the harness calls. A backend subclasses `LM` for the defaults of the optional
    members: `counters` (empty) and the training members, which a backend without the `train` capability never
    receives (strategies check `TRAIN in capabilities` in their check(), before any work)."""

    capabilities: frozenset[str]
    counters: ClassVar[Mapping[str, int]] = MappingProxyType({})
    """Requests, retries, cache hits, failures so far (a backend that counts them sets its own dict)."""

    def render(self, messages: Sequence[dict]) -> str:
        """Chat messages → the prompt text exactly as the model sees it (chat template or plain format)."""

    def count_tokens(self, text: str) -> int: ...

    @property
    def context_length(self) -> int | None:
        """The model's context in tokens where the backend knows it (transformers, llama.cpp), else None."""
        return None

    def score_choices(self, prompts: Sequence[str], choices: Sequence[str]) -> list[ChoiceScores]:
        """Log-likelihood of each choice as the whole answer after each prompt (batched, shared prefixes): the
        choice's tokens and the terminator the model writes after an answer (end of turn, or the plain format's
        line end), so a label that extends another ("insurance" / "insurance change") can win."""

    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = (),
                 max_sentences: int | None = None, constraint=None) -> list[Generation]:
        """Greedy continuation of each prompt, ended at the end of the model's turn, a stop string or after
        `max_sentences` sentences (see `cut_answer`); `output_tokens` counts the tokens generated. A backend whose
        `prepare_constraint` compiled a `constraint` (harness.lm.constrained) takes it here: the answer then follows its
        grammar."""
        ...

    def prepare_constraint(self, constraint: Any, arm: str) -> dict | None:
        """Compile a constraint (harness.lm.constrained) for generate(constraint=…): the report for prepare.json
        (`on`: whether generation will follow it); None: this backend cannot constrain decoding."""
        return None

    def describe(self) -> dict:
        """Model id, backend, device, dtype, parameter count: recorded with every result."""
        ...

    def train_adapter(self, train_pairs: Sequence[tuple[str, str]], dev_pairs: Sequence[tuple[str, str]],
                      config: Mapping[str, Any], out_dir: Path, seed: int, progress: Callable | None = None,
                      dev_metric: Callable[[LM], float] | None = None, full: bool = False) -> dict:
        """Train a LoRA adapter (or, with `full`, every weight) on (prompt, target) pairs into out_dir, the best
        epoch on dev kept (by dev loss, or by `dev_metric(lm being trained)`); returns the training report."""
        raise NotImplementedError(f"the {self.describe().get('backend')} backend cannot train")

    def with_adapter(self, path: Path, merge: bool = True) -> LM:
        """This model with the adapter saved at path (train_adapter), merged into its weights when `merge`."""
        raise NotImplementedError(f"the {self.describe().get('backend')} backend cannot load an adapter")

    def with_weights(self, path: Path) -> LM:
        """This backend around the fully fine-tuned weights saved at path (train_adapter(full=True))."""
        raise NotImplementedError(f"the {self.describe().get('backend')} backend cannot load trained weights")

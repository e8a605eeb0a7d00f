"""Generation for the transformers backend (harness.lm.hf): greedy decoding in batches of similar length, each row
ended by its stop strings or sentence limit, and constrained decoding through xgrammar's token masks. Functions of
a `TransformersLM`, which calls them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Sequence

import torch
from transformers import LogitsProcessor

from harness.lm import Generation, answer_done, cut_answer

if TYPE_CHECKING:
    from harness.lm.hf import TransformersLM


class GrammarMask(LogitsProcessor):
    """xgrammar's token mask for each row of a generate() batch: a row's logits keep only what its grammar allows
    next. A row that has ended (end of turn, stop string) is left unmasked: generate() pads it anyway."""

    def __init__(self, compiled, rows: int, start: int, vocab_size: int):
        import xgrammar as xgr

        self.xgr, self.start = xgr, start
        self.matchers = [xgr.GrammarMatcher(compiled) for _ in range(rows)]
        self.left = [False] * rows
        self.bitmask = xgr.allocate_token_bitmask(rows, vocab_size)
        self.seconds = [0.0] * rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        fed = input_ids.shape[1] > self.start
        for row, matcher in enumerate(self.matchers):
            t0 = time.perf_counter()
            if fed and not self.left[row]:
                self.left[row] = matcher.is_terminated() or not matcher.accept_token(int(input_ids[row, -1]))
            if self.left[row] or matcher.is_terminated():
                self.bitmask[row].fill_(-1)  # every token allowed
            else:
                matcher.fill_next_token_bitmask(self.bitmask, row)
            self.seconds[row] += time.perf_counter() - t0
        t0 = time.perf_counter()
        self.xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device))
        share = (time.perf_counter() - t0) / len(self.matchers)
        self.seconds = [s + share for s in self.seconds]
        return scores


def answer_ender(tokenizer, start: int, stop: Sequence[str], max_sentences: int | None):
    """A stopping criterion that ends each row once its answer has ended (stop string, sentence limit)."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class AnswerEnded(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
            return torch.tensor([answer_done(t, stop, max_sentences) for t in texts], dtype=torch.bool,
                                device=input_ids.device)
    return StoppingCriteriaList([AnswerEnded()])


def generate(lm: TransformersLM, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = (),
             max_sentences: int | None = None, constraint=None) -> list[Generation]:
    """`LM.generate` of the transformers backend (see TransformersLM.generate)."""
    grammar = lm._grammars[constraint.key()][0] if constraint is not None else None
    encoded = [lm.encode(p, reserve=max_new_tokens) for p in prompts]
    results: list[Generation | None] = [None] * len(prompts)
    pad = lm.tokenizer.pad_token_id
    ended = {*lm.eos_ids, pad}  # a row that has ended is filled with padding
    for batch in lm._batches([len(e[0]) for e in encoded]):
        start = time.perf_counter()
        seqs = [encoded[i][0] for i in batch]
        width = max(len(s) for s in seqs)
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=lm.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=lm.device)
        ender = answer_ender(lm.tokenizer, width, stop, max_sentences) if stop or max_sentences else None
        masker = GrammarMask(grammar, len(batch), width, lm.model.config.vocab_size) if grammar else None
        out = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                do_sample=False, eos_token_id=lm.eos_ids or None, pad_token_id=pad,
                                stopping_criteria=ender, logits_processor=[masker] if masker else None)
        share = (time.perf_counter() - start) / len(batch)
        for row, i in enumerate(batch):
            new = out[row, width:].tolist()
            cut = next((k for k, t in enumerate(new) if t in ended), len(new))  # tokens generated
            text = lm.tokenizer.decode(new[:cut], skip_special_tokens=True)
            results[i] = Generation(cut_answer(text, stop, max_sentences), len(seqs[row]), cut, share,
                                    encoded[i][1])
            if masker:  # an answer still open at max_new_tokens can break its grammar (unclosed JSON)
                results[i].grammar_s = masker.seconds[row]
                results[i].grammar_unfinished = cut >= max_new_tokens
    return results  # type: ignore[return-value]

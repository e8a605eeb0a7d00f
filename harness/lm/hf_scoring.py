"""Label scoring for the transformers backend (harness.lm.hf): each prompt runs once and every label continuation is
scored from its KV cache in the same forward pass; a token prefix that all prompts share (instruction and
demonstrations) is computed once for the whole call. Functions of a `TransformersLM`, which calls them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Sequence

import torch
from transformers import DynamicCache

from harness.errors import ConfigError
from harness.lm import ChoiceScores

if TYPE_CHECKING:
    from harness.lm.hf import TransformersLM

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # keys and values of every layer


def cache_of(model, layers: Layers) -> DynamicCache:
    return DynamicCache(ddp_cache_data=layers, config=model.config)


def layers_of(cache: DynamicCache) -> Layers:
    return [(layer.keys, layer.values) for layer in cache.layers]


def prefix_layers(lm: TransformersLM, ids: list[int]) -> Layers:
    """The keys and values of a token prefix, computed once."""
    inp = torch.tensor([ids], device=lm.device)
    out = lm.model(input_ids=inp, use_cache=True, logits_to_keep=1)
    return layers_of(out.cache)


def additive(model, mask: torch.Tensor) -> torch.Tensor:
    """Eager attention takes an additive float mask; sdpa takes the boolean one as it is."""
    if model.config._attn_implementation != "eager":
        return mask
    return torch.zeros(mask.shape, dtype=model.dtype, device=mask.device).masked_fill(
        ~mask, torch.finfo(model.dtype).min)


def score_batch(lm: TransformersLM, suffixes: list[list[int]], prefix: Layers | None, shared: int,
                choice_ids: list[list[int]]) -> torch.Tensor:
    """One forward pass for a batch: each row holds its left-padded prompt suffix followed by the tokens 1..n-1
    of every choice. A 4D mask lets each choice see the prompt and its own earlier tokens only, so all choices
    are scored from one pass without copying the KV cache; logits are computed only where they are read."""
    dev, b = lm.device, len(suffixes)
    width = max(len(s) for s in suffixes)
    conts = [c[:-1] for c in choice_ids]               # tokens fed for choice j (the last one is only predicted)
    offsets, m = [], 0
    for c in conts:
        offsets.append(m)
        m += len(c)
    pad = lm.tokenizer.pad_token_id
    flat = [t for c in conts for t in c]
    ids = torch.tensor([[pad] * (width - len(s)) + s + flat for s in suffixes], device=dev)
    own = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in suffixes], dtype=torch.bool, device=dev)
    q = width + m
    # which continuation block (choice) each continuation slot belongs to, and its index inside the block
    block = torch.tensor([j for j, c in enumerate(conts) for _ in c], dtype=torch.long, device=dev)
    step = torch.tensor([t for c in conts for t in range(len(c))], dtype=torch.long, device=dev)
    mask = torch.zeros(b, q, shared + q, dtype=torch.bool, device=dev)
    mask[:, :, :shared] = True
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool, device=dev))
    mask[:, :width, shared:shared + width] = causal & own[:, None, :]
    mask[:, :width, shared:shared + width] |= torch.eye(width, dtype=torch.bool, device=dev)  # no empty rows
    if m:
        mask[:, width:, shared:shared + width] = own[:, None, :]
        same = (block[:, None] == block[None, :]) & (step[None, :] <= step[:, None])
        mask[:, width:, shared + width:] = same
    lengths = own.sum(-1)
    position = torch.cat([shared + (own.long().cumsum(-1) - 1).clamp(min=0),
                          (shared + lengths)[:, None] + step[None, :]], dim=1)
    attn = additive(lm.model, mask[:, None])
    if lm.sliding_window:  # e.g. Gemma 3: its local layers see only the last `sliding_window` positions
        keys = torch.cat([torch.arange(shared, device=dev).expand(b, -1), position], dim=1)
        local = mask & (position[:, :, None] - keys[:, None, :] < lm.sliding_window)
        attn = {"full_attention": attn, "sliding_attention": additive(lm.model, local[:, None])}
    kwargs = {}
    if prefix is not None:
        kwargs["cache"] = cache_of(lm.model, [(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in prefix])
    keep = torch.arange(width - 1, q, device=dev)        # last prompt token + every continuation slot
    logits = lm.model(input_ids=ids, attention_mask=attn, position_ids=position, logits_to_keep=keep,
                      use_cache=prefix is not None, **kwargs).logits
    logp = torch.log_softmax(logits.float(), dim=-1)      # [b, 1 + m, vocab]
    scores = logp[:, 0, [c[0] for c in choice_ids]].clone()
    for j, c in enumerate(choice_ids):
        for t in range(1, len(c)):
            scores[:, j] += logp[:, 1 + offsets[j] + t - 1, c[t]]
    return scores


def score_choices(lm: TransformersLM, prompts: Sequence[str], choices: Sequence[str]) -> list[ChoiceScores]:
    """`LM.score_choices` of the transformers backend: batches of similar length, the shared prefix once."""
    if any(not lm.tokenizer(lm.separator + c, add_special_tokens=False).input_ids for c in choices):
        raise ConfigError("a label tokenizes to nothing; give it a readable label_text", field="labels")
    choice_ids = [lm.answer_ids(c) for c in choices]
    extra = sum(len(c) - 1 for c in choice_ids)
    encoded = [lm.encode(p, reserve=max(len(c) for c in choice_ids)) for p in prompts]
    ids = [e[0] for e in encoded]
    shared = 0 if lm.sliding_window else lm._shared_prefix(ids)  # a sliding cache would drop the prefix
    prefix = prefix_layers(lm, ids[0][:shared]) if shared else None
    results: list[ChoiceScores | None] = [None] * len(prompts)
    for batch in lm._batches([len(i) for i in ids]):
        start = time.perf_counter()
        scores = score_batch(lm, [ids[i][shared:] for i in batch], prefix, shared, choice_ids)
        share = (time.perf_counter() - start) / len(batch)
        for row, i in enumerate(batch):
            results[i] = ChoiceScores(scores[row].tolist(), len(ids[i]), extra + len(choice_ids), share,
                                      encoded[i][1])
    return results  # type: ignore[return-value]

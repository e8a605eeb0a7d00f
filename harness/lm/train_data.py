"""Training examples for the transformers backend (harness.lm.training) as token ids: (prompt, target) pairs
encoded as inference sees them, length-grouped batches, the prompt prefix every example shares, and left-padded
batches with labels on the target tokens only, and the loss over those targets."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch

from harness.lm import common_prefix, cut_middle


@dataclass
class Encoded:
    ids: list[int]
    target_len: int  # the last target_len tokens are the target (loss), the rest the prompt


def encode_pairs(lm, pairs: Sequence[tuple[str, str]], max_length: int) -> tuple[list[Encoded], int]:
    """Prompt + target + end of answer token ids; prompts longer than max_length are cut in the middle."""
    out, truncated = [], 0
    for prompt, target in pairs:
        t = lm.answer_ids(target)  # ends with the terminator label scoring reads (lm.answer_end)
        t = t[: max_length // 2]
        p = lm.tokenizer(prompt, add_special_tokens=not lm.use_chat).input_ids
        budget = max_length - len(t)
        if len(p) > budget:
            truncated += 1
            p = cut_middle(p, budget)
        out.append(Encoded(p + t, len(t)))
    return out, truncated


def batches(data: Sequence[Encoded], size: int, rng: random.Random, group_by_length: bool) -> list[list[int]]:
    order = list(range(len(data)))
    rng.shuffle(order)
    if group_by_length:  # sort within mega-batches so a batch holds similar lengths, then shuffle the batches
        mega = size * 32
        order = [i for s in range(0, len(order), mega)
                 for i in sorted(order[s:s + mega], key=lambda i: len(data[i].ids))]
    out = [order[s:s + size] for s in range(0, len(order), size)]
    rng.shuffle(out)
    return out


def micro_batches(rows: Sequence[Encoded], max_tokens: int) -> list[list[Encoded]]:
    """A batch's rows in parts whose padded size (rows × longest row) stays within max_tokens; a row longer than
    that is a part of its own. One part when the batch fits, so small batches run exactly as before."""
    if len(rows) * max(len(e.ids) for e in rows) <= max_tokens:
        return [list(rows)]
    parts: list[list[Encoded]] = []
    for e in sorted(rows, key=lambda e: len(e.ids)):  # longest last: a part's width is its last row's length
        if parts and (len(parts[-1]) + 1) * len(e.ids) <= max_tokens:
            parts[-1].append(e)
        else:
            parts.append([e])
    return parts


def shared_prefix(data: Sequence[Encoded], minimum: int = 16) -> list[int]:
    """The token prefix every sequence shares inside its prompt (e.g. the system instruction), or []."""
    limit = min(len(e.ids) - e.target_len for e in data) - 1  # each row keeps ≥ 1 prompt token of its own
    return data[0].ids[:common_prefix([e.ids for e in data], limit, minimum)]


def collate(data: Sequence[Encoded], pad: int, device, prefix: Sequence[int] = ()) -> dict:
    """Left-padded batch of the sequences after the shared prefix (which runs once per batch, see target_loss)."""
    p = len(prefix)
    rows = [e.ids[p:] for e in data]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    labels = torch.full_like(ids, -100)
    for row, e in enumerate(data):
        labels[row, width - e.target_len:] = ids[row, width - e.target_len:]
    position = p + (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": position, "labels": labels,
            "prefix": torch.tensor([list(prefix)], device=device) if p else None,
            "keep": max(e.target_len for e in data) + 1, "tokens": int(mask.sum()) + p * len(data)}


def target_loss(model, batch: dict, target_only: bool) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over target tokens, and their count. With target_only the LM head runs only on the
    last `keep` positions (every target sits at the end of its left-padded row). A shared prefix runs once (batch
    of one, in the graph so the adapter learns through it) and its keys and values are broadcast to every row."""
    keep = batch["keep"] if target_only else 0
    kwargs, mask = {}, batch["attention_mask"]
    if batch.get("prefix") is not None:
        from transformers import DynamicCache

        prefix = batch["prefix"]
        b = batch["input_ids"].shape[0]
        cache = model(input_ids=prefix, use_cache=True, logits_to_keep=1).cache
        config = model.config if hasattr(model, "config") else None
        kwargs["cache"] = DynamicCache(ddp_cache_data=[(layer.keys.expand(b, -1, -1, -1),
                                                        layer.values.expand(b, -1, -1, -1)) for layer in cache.layers],
                                       config=config)
        mask = torch.cat([torch.ones(b, prefix.shape[1], dtype=mask.dtype, device=mask.device), mask], dim=1)
    logits = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"],
                   logits_to_keep=keep, use_cache=bool(kwargs), **kwargs).logits
    labels = batch["labels"][:, -logits.shape[1]:]
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    n = int((shift_labels != -100).sum())
    loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                             ignore_index=-100, reduction="sum")
    return loss, n

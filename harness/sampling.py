"""Subsets of a split: the first N, a seeded stratified sample (nested across sizes), N per label; and inputs cut
to a length."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from harness.task import Example


SAMPLING = ("first", "stratified")


def subset(examples: Sequence[Example], limit: int | None, sample: str = "first", seed: int = 0,
           by_label: bool = False) -> tuple[Example, ...]:
    """The first `limit` examples in file order, or a seeded subset (`stratified`: label proportions kept when
    `by_label`). Stratified subsets are nested: the subset of size n is contained in the one of size m > n with the
    same seed, so the points of a learning curve add examples rather than swap them. File order is kept."""
    if not limit or limit >= len(examples):
        return tuple(examples)
    if sample == "first":
        return tuple(examples[:limit])
    rng = random.Random(seed)
    groups: dict = {}
    for ex in examples:
        groups.setdefault(ex.target if by_label else None, []).append(ex)
    ranked = []
    for key in sorted(groups, key=str):
        members = groups[key][:]
        rng.shuffle(members)
        ranked.extend(((rank + rng.random()) / len(members), ex.line, ex) for rank, ex in enumerate(members))
    chosen = {id(ex) for _, _, ex in sorted(ranked, key=lambda r: (r[0], r[1]))[:limit]}
    return tuple(ex for ex in examples if id(ex) in chosen)


def cut_input(text: str, limit: int) -> str:
    """An input longer than `limit` characters, cut in the middle (its start and end kept, as the model backends
    cut prompts longer than the context)."""
    if len(text) <= limit:
        return text
    mark = " […] "
    head = max(0, (limit - len(mark)) * 2 // 3)
    tail = max(0, limit - len(mark) - head)
    return text[:head] + mark + (text[-tail:] if tail else "")


def per_class(examples: Sequence[Example], n: int, sample: str = "stratified", seed: int = 0) -> tuple[Example, ...]:
    """At most n examples of each label (all of a label that has fewer): the first n in file order (`first`), or a
    seeded choice (`stratified`). Nested like `subset`: with the same seed, n per class is contained in m > n per
    class, so a learning curve over it adds examples. File order is kept."""
    rng = random.Random(seed)
    groups: dict = {}
    for ex in examples:
        groups.setdefault(ex.target, []).append(ex)
    chosen = set()
    for key in sorted(groups, key=str):
        members = groups[key][:]
        if sample != "first":
            rng.shuffle(members)
        chosen.update(id(ex) for ex in members[:n])
    return tuple(ex for ex in examples if id(ex) in chosen)

"""Task kinds by name: the one place a task's `type:` is looked up (harness/kinds/base.py says what a kind is).

    kinds.of(task)            the kind of a loaded task (any object with a `type`)
    kinds.get(name)           the kind recorded in comparison.json's task_type (ConfigError when unknown)
    kinds.register(kind)      add a kind: one module (or object) with the TaskKind members, and this call

Metric names are shared across kinds: a metric two kinds both define must average the same per-example value.
"""

from __future__ import annotations

from typing import Any

from harness.errors import ConfigError
from harness.kinds import classification, extraction, generation
from harness.kinds.base import MEMBERS, Breakdown, TaskKind, Where

__all__ = ["Breakdown", "TaskKind", "Where", "get", "names", "of", "register", "task_keys", "unregister"]

_KINDS: dict[str, TaskKind] = {}


def register(kind: Any) -> Any:
    """Add a kind under its `name` (returned, so a module can end with `register(...)`). Refuses an object that
    lacks a member of TaskKind, a name already taken, or a metric averaged differently from another kind's."""
    missing = [m for m in MEMBERS if not hasattr(kind, m)]
    if missing:
        raise ConfigError(f"task kind {getattr(kind, 'name', kind)!r} lacks {', '.join(missing)} of "
                          f"harness.kinds.base.TaskKind", field="type")
    if kind.name in _KINDS and _KINDS[kind.name] is not kind:
        raise ConfigError(f"a task kind named {kind.name!r} is already registered", field="type")
    for other in _KINDS.values():
        clash = [m for m in set(kind.mean_of) & set(other.mean_of) if kind.mean_of[m] != other.mean_of[m]]
        if clash and other is not kind:
            raise ConfigError(f"metric {clash[0]!r} of task kind {kind.name!r} averages {kind.mean_of[clash[0]]!r}"
                              f" but {other.name!r} averages {other.mean_of[clash[0]]!r}", field="type")
    _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Remove a kind added with `register` (tests)."""
    _KINDS.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(_KINDS)


def get(name: Any, field: str = "type") -> TaskKind:
    """The kind called `name`; a ConfigError naming `field` and the known kinds when there is none."""
    kind = _KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ConfigError(f"unknown task type {name!r} (one of {', '.join(_KINDS)})", field=field)
    return kind


def of(task: Any) -> TaskKind:
    """The kind of a task (harness.task.Task, or anything with its `type`)."""
    return get(task.type)


def task_keys() -> frozenset[str]:
    """The task.yaml keys some kind reads."""
    return frozenset().union(*(kind.keys for kind in _KINDS.values()))


for _kind in (classification, extraction, generation):
    register(_kind)

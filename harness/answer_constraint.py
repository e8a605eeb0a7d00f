"""What a constrained decoder must produce: a JSON value valid under a schema, or exactly one of a set of labels.

Plain data, built by the task kinds (harness/kinds) and compiled by each backend's grammar library
(harness/lm/constrained.py says when an arm is constrained and how a grammar is compiled).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

JSON_SCHEMA, LABELS = "json_schema", "labels"


@dataclass(frozen=True)
class Constraint:
    """What the decoder must produce: a JSON value valid under `schema`, or exactly one of `labels`."""

    kind: str
    schema: Mapping[str, Any] | None = None
    labels: tuple[str, ...] = ()
    report: dict = field(default_factory=dict, compare=False)  # library, compile time, left-out keywords

    def key(self) -> str:
        return json.dumps([self.kind, self.schema, list(self.labels)], sort_keys=True, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    return str(value)


def thaw(value: Any) -> Any:
    """A task's frozen schema as plain dicts and lists (what libraries take)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def fields_schema(fields) -> dict:
    """The schema of an extraction task without one: an object with exactly its fields, each a scalar or null."""
    return {"type": "object", "properties": {f: {"type": ["string", "number", "null"]} for f in fields},
            "required": list(fields), "additionalProperties": False}

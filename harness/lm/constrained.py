"""Constrained decoding, shared by every generating arm: the task's JSON Schema (extraction) or its label set
(classification that generates) becomes a grammar the decoder cannot leave.

`constrained: auto | true | false` in an arm's YAML. auto = on for an extraction task with a schema and for
classification with `decode: generate`; off elsewhere (label scoring already chooses among the labels). true also
constrains an extraction task without a schema to a JSON object of its `fields` (each a string, number or null).
Each backend turns a `Constraint` into its library's grammar: xgrammar for transformers (picked by
bench/constrained_decoding.py), llama.cpp's JSON-schema → GBNF converter for llama.cpp, OpenAI `response_format`
for the HTTP backend. Schema keywords a library cannot express are left out of the grammar with a warning naming
them (the scorer still validates against the whole schema); a grammar that does not compile turns the constraint
off with a warning. An answer cut at max_new_tokens can still be invalid JSON: the grammar only forbids wrong
tokens, it cannot make a long answer fit.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Mapping

from harness import kinds
# JSON_SCHEMA, LABELS, Constraint, fields_schema and thaw are also named as constrained.X by backends and tests
from harness.answer_constraint import JSON_SCHEMA, LABELS, Constraint, fields_schema, thaw  # noqa: F401
from harness.console import status
from harness.errors import ConfigError

# Keywords that describe but never constrain: ignored by every grammar and harmless to leave out.
ANNOTATIONS = frozenset({"title", "description", "$schema", "$id", "$comment", "default", "examples", "deprecated",
                         "readOnly", "writeOnly", "$anchor"})
# Keywords each library expresses (measured in bench/constrained_decoding.py; llama.cpp from its converter).
SUPPORTED = {
    "xgrammar": frozenset({"type", "properties", "required", "additionalProperties", "enum", "const", "pattern",
                           "format", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
                           "exclusiveMaximum", "multipleOf", "items", "prefixItems", "minItems", "maxItems", "anyOf",
                           "oneOf", "$ref", "$defs", "definitions"}),
    "llama.cpp": frozenset({"type", "properties", "required", "additionalProperties", "enum", "const", "pattern",
                            "format", "minLength", "maxLength", "items", "prefixItems", "minItems", "maxItems",
                            "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions"}),
    # OpenAI structured outputs' documented subset: what a served model is asked to follow
    "openai": frozenset({"type", "properties", "required", "additionalProperties", "enum", "const", "items",
                         "anyOf", "$ref", "$defs", "pattern", "format", "minimum", "maximum", "exclusiveMinimum",
                         "exclusiveMaximum", "multipleOf", "minItems", "maxItems"}),
}
SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
SUBSCHEMA_ONE = ("items", "not", "if", "then", "else", "contains", "additionalProperties", "propertyNames")


def parse_setting(value: Any, arm: str) -> str | bool:
    """auto, true or false (YAML booleans or the words)."""
    if isinstance(value, bool) or value == "auto":
        return value
    words = {"true": True, "on": True, "yes": True, "false": False, "off": False, "no": False}
    if isinstance(value, str) and value.lower() in words:
        return words[value.lower()]
    raise ConfigError(f"must be auto, true or false, got {value!r}", field=f"strategies.{arm}.constrained")


def wanted(task, setting: str | bool, mode: str, arm: str) -> Constraint | None:
    """The constraint an arm's setting asks for on this task with its resolved decode mode, or None (off)."""
    if setting is False:
        return None
    return kinds.of(task).constraint(task, mode, setting is True, f"strategies.{arm}.constrained")


def unsupported(schema: Any, supported: frozenset[str], path: str = "#") -> list[tuple[str, str]]:
    """(path, keyword) of every constraining keyword in `schema` that a library cannot express."""
    found: list[tuple[str, str]] = []
    if not isinstance(schema, Mapping):
        return found
    for key, value in schema.items():
        if key not in supported and key not in ANNOTATIONS and not key.startswith("x-"):
            found.append((path, key))
            continue
        if key in SUBSCHEMA_MAPS and isinstance(value, Mapping):
            for name, sub in value.items():
                found += unsupported(sub, supported, f"{path}/{key}/{name}")
        elif key in SUBSCHEMA_LISTS and isinstance(value, (list, tuple)):
            for i, sub in enumerate(value):
                found += unsupported(sub, supported, f"{path}/{key}/{i}")
        elif key in SUBSCHEMA_ONE:
            found += unsupported(value, supported, f"{path}/{key}")
    return found


def strip(schema: Any, supported: frozenset[str]) -> Any:
    """`schema` without the keywords a library cannot express (its grammar is then looser, never stricter)."""
    if not isinstance(schema, Mapping):
        return schema
    out = {}
    for key, value in schema.items():
        if key not in supported and key not in ANNOTATIONS and not key.startswith("x-"):
            continue
        if key in SUBSCHEMA_MAPS and isinstance(value, Mapping):
            value = {name: strip(sub, supported) for name, sub in value.items()}
        elif key in SUBSCHEMA_LISTS and isinstance(value, (list, tuple)):
            value = [strip(sub, supported) for sub in value]
        elif key in SUBSCHEMA_ONE:
            value = strip(value, supported)
        out[key] = value
    return out


def quote(text: str) -> str:
    """A string literal of GBNF / xgrammar's EBNF (JSON's escapes are theirs too)."""
    return json.dumps(text, ensure_ascii=False)


def label_grammar(labels) -> str:
    """One rule: exactly one of the labels (GBNF, which xgrammar's EBNF reads too)."""
    return "root ::= " + " | ".join(quote(label) for label in dict.fromkeys(labels))


TYPE_KEYWORDS = {"string": ("pattern", "format", "minLength", "maxLength"),
                 "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
                 "integer": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
                 "array": ("items", "prefixItems", "minItems", "maxItems"),
                 "object": ("properties", "required", "additionalProperties")}


def split_type_lists(schema: Any) -> Any:
    """`{"type": ["string", "null"], "pattern": p}` → `{"anyOf": [{"type": "string", "pattern": p}, {"type":
    "null"}]}`: llama.cpp's converter drops a type list's other keywords (the pattern would be lost)."""
    if isinstance(schema, list):
        return [split_type_lists(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {}
    for key, value in schema.items():
        if key in SUBSCHEMA_MAPS and isinstance(value, Mapping):
            value = {name: split_type_lists(sub) for name, sub in value.items()}
        elif key in SUBSCHEMA_LISTS + SUBSCHEMA_ONE:
            value = split_type_lists(value)
        out[key] = value
    kinds = out.get("type")
    if isinstance(kinds, list) and not any(k in out for k in ("enum", "const", "anyOf", "oneOf")):
        branches = [{"type": t, **{k: out[k] for k in TYPE_KEYWORDS.get(t, ()) if k in out}} for t in kinds]
        typed = {k for t in kinds for k in TYPE_KEYWORDS.get(t, ())}
        out = {k: v for k, v in out.items() if k != "type" and k not in typed}
        out["anyOf"] = branches
    return out


def compile_for(lm, constraint: Constraint, library: str, build: Callable[[Constraint], Any], arm: str):
    """Compile `constraint` with a backend's `build` (schema keywords the library lacks left out, with a warning),
    timed; a grammar that fails to build turns constrained decoding off for the arm, with a warning.
    Returns (compiled grammar or None, report for prepare.json)."""
    report: dict[str, Any] = {"kind": constraint.kind, "library": library}
    if constraint.kind == JSON_SCHEMA:
        missing = unsupported(constraint.schema, SUPPORTED[library])
        if missing:
            names = ", ".join(f"{k} at {p}" for p, k in missing)
            status(f"[yellow]warning:[/yellow] {arm}: constrained decoding ({library}) cannot express {names}; the "
                   f"grammar leaves {'it' if len(missing) == 1 else 'them'} out, so answers may still break "
                   f"{'it' if len(missing) == 1 else 'them'} (schema_valid_rate counts them)")
            report["left_out"] = [f"{k} at {p}" for p, k in missing]
            constraint = Constraint(JSON_SCHEMA, schema=strip(constraint.schema, SUPPORTED[library]))
    start = time.perf_counter()
    try:
        compiled = build(constraint)
    except Exception as e:  # the library refuses the grammar: generate unconstrained, say so
        why = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
        status(f"[yellow]warning:[/yellow] {arm}: constrained decoding off: {library} cannot compile the "
               f"{constraint.kind.replace('_', ' ')} grammar ({why})")
        return None, {**report, "on": False, "why": f"{library} cannot compile it: {why}"}
    return compiled, {**report, "on": True, "compile_s": round(time.perf_counter() - start, 4)}


def setup(task, lm, setting: Any, mode: str, arm: str) -> tuple[Constraint | None, dict]:
    """The arm's constraint compiled by its backend (cached there), or None when off, and prepare.json's
    `constrained` entry. Refuses `true` on a backend that cannot constrain; `auto` there generates unconstrained."""
    setting = parse_setting(setting, arm)
    constraint = wanted(task, setting, mode, arm)
    if constraint is None:
        if mode == "score":  # only a labelled task kind is scored per label (inference.resolve_decode)
            return None, {"on": False, "why": "label scoring already chooses among the labels"}
        return None, {"on": False, "setting": setting}
    report = lm.prepare_constraint(constraint, arm)
    backend = lm.describe().get("backend", "?")
    if report is None:
        if setting is True:
            raise ConfigError(f"arm {arm!r} asks for constrained decoding, which its {backend} backend cannot do",
                              field=f"strategies.{arm}.constrained")
        status(f"[yellow]warning:[/yellow] {arm}: its {backend} backend cannot constrain decoding; generating "
               f"unconstrained")
        return None, {"on": False, "why": f"the {backend} backend cannot constrain decoding"}
    if not report.get("on"):
        return None, report
    return Constraint(constraint.kind, constraint.schema, constraint.labels, report), report


def describe(constraint: Constraint | None) -> dict:
    """The arm-settings entry: present only when on, so arms without it keep the fingerprints they had."""
    return {"constrained": constraint.kind} if constraint is not None else {}

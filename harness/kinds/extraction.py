"""Extraction: the answer is one JSON object with the task's `fields:` (optionally held to a JSON Schema, `schema:`).

Scored field by field after light normalisation (case, spaces; numbers as numbers where the schema says so):
micro-F1 over fields, field accuracy, whole-record exact match, valid-JSON and schema-valid rates.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np

from harness.answer_constraint import JSON_SCHEMA, Constraint, fields_schema, thaw
from harness.errors import ConfigError, TaskError
from harness.kinds.base import Breakdown, Where, f1, mean, no_meta
from harness.taskdata import read_text

name = "extraction"
metrics = ("field_f1", "field_accuracy", "record_exact_match", "valid_json_rate", "schema_valid_rate")
default_metric = "field_f1"
mean_of = {"field_accuracy": "field_accuracy", "record_exact_match": "record_exact_match",
           "valid_json_rate": "valid_json", "schema_valid_rate": "schema_valid"}
proxy_of = {"field_f1": "field_accuracy"}
labelled = False
keys = frozenset({"fields", "schema"})
breakdown = Breakdown("per_field.png", "exact match per field",
                      lambda details: details.get("per_field_exact_match", {}))
example_meta = no_meta


def read_spec(raw: Mapping[str, Any], path: Path) -> dict[str, Any]:
    fields = raw.get("fields") or []
    if not isinstance(fields, list) or not fields:
        raise TaskError("an extraction task needs a list of field names", file=path, field="fields")
    return {"fields": tuple(str(f) for f in fields), "schema": _schema(raw.get("schema"), path)}


def _schema(value: Any, path: Path) -> dict | None:
    """The JSON Schema of an answer: inline, or a file next to task.yaml; checked to be a valid schema."""
    if value is None:
        return None
    if isinstance(value, str):
        file = path.parent / value
        if not file.is_file():
            raise TaskError(f"schema file not found: {file}", file=path, field="schema")
        try:
            value = json.loads(read_text(file))
        except json.JSONDecodeError as e:
            raise TaskError(f"not valid JSON ({e.msg})", file=file, line=e.lineno) from None
    if not isinstance(value, dict):
        raise TaskError("must be a JSON Schema object or a file holding one", file=path, field="schema")
    import jsonschema

    try:
        jsonschema.validators.validator_for(value).check_schema(value)
    except jsonschema.SchemaError as e:
        raise TaskError(f"not a valid JSON Schema ({e.message})", file=path, field="schema") from None
    return value


def parse_target(settings: Mapping[str, Any], value: Any, where: Where) -> Mapping[str, Any]:
    """A JSON object (or a string holding one) with only the task's fields, valid under the schema if any."""
    fields, schema = settings["fields"], settings.get("schema")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, dict):
        raise where.error("must be a JSON object with the task's fields")
    extra = sorted(set(value) - set(fields))
    if extra:
        raise where.error(f"key {extra[0]!r} is not one of the task's fields ({', '.join(fields)})")
    if schema is not None:
        import jsonschema

        problem = jsonschema.exceptions.best_match(_validator(schema).iter_errors(value))
        if problem is not None:
            path = ".".join(str(p) for p in problem.absolute_path)
            raise where.error(f"the gold answer breaks the task's schema ({problem.message})",
                              suffix=f".{path}" if path else "")
    return MappingProxyType({f: value.get(f) for f in fields})


def answer_text(task: Any, target: Any) -> str:
    return json.dumps(dict(target), ensure_ascii=False)


def constraint(task: Any, mode: str, insist: bool, field: str) -> Constraint | None:
    """The task's schema; with `constrained: true` and no schema, an object with exactly its fields."""
    if task.schema is not None:
        return Constraint(JSON_SCHEMA, schema=thaw(task.schema))
    if insist and task.fields:
        return Constraint(JSON_SCHEMA, schema=fields_schema(task.fields))
    if insist:
        raise ConfigError(f"constrained decoding needs the task's schema or fields ({task.name} has neither)",
                          field=field)
    return None


def parse_json_object(output: str) -> dict | None:
    """Tolerant JSON parsing of a model's output: code fences, prose around the object, trailing commas."""
    text = str(output).strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fence:
        text = fence.group(1).strip()
    start = text.find("{")
    while start != -1:
        end = _object_end(text, start)
        if end is not None:
            candidate = text[start:end + 1]
            for attempt in (candidate, re.sub(r",\s*([}\]])", r"\1", candidate)):
                try:
                    obj = json.loads(attempt)
                except json.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    return obj
        start = text.find("{", start + 1)
    return None


def _object_end(text: str, start: int) -> int | None:
    """The index of the brace that closes the one at `start` (braces inside strings skipped), or None."""
    depth, in_str, esc = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            esc = (ch == "\\") and not esc
            if ch == '"' and not esc:
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _norm_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    text = " ".join(str(value).split()).casefold()
    return text or None


def _number_fields(schema: Mapping | None) -> set[str]:
    """Fields whose schema type is a number: compared as numbers (1250 = 1250.00 = "1,250.00")."""
    props = (schema or {}).get("properties") or {}
    out = set()
    for field, prop in props.items():
        kinds = prop.get("type") if isinstance(prop, Mapping) else None
        kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
        if "number" in kinds or "integer" in kinds:
            out.add(field)
    return out


def _as_number(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    try:
        return format(float(str(value).replace(",", "").strip()), ".6g")
    except ValueError:
        return value


def _validator(schema: Mapping):
    """A JSON Schema validator for the task's schema (built once per scoring call)."""
    import jsonschema

    plain = thaw(schema)
    return jsonschema.validators.validator_for(plain)(plain)


def _score_one(fields: Sequence[str], numbers: set[str], gold: Mapping, obj: dict | None) -> dict:
    pred = obj if obj is not None else {}
    hits, tp, fp, fn = {}, 0, 0, 0
    for f in fields:
        g, p = gold.get(f), pred.get(f)
        if f in numbers:
            g, p = _as_number(g), _as_number(p)
        g, p = _norm_value(g), _norm_value(p)
        hits[f] = int(g == p)
        if p is not None and p == g:
            tp += 1
        else:
            fp += p is not None
            fn += g is not None
    return {"valid_json": int(obj is not None), "fields": hits, "tp": tp, "fp": fp, "fn": fn,
            "record_exact_match": int(all(hits.values())), "field_accuracy": sum(hits.values()) / len(fields)}


def score_fields(fields: Sequence[str], targets: Sequence[Mapping], outputs: Sequence[str],
                 schema: Mapping | None = None) -> dict:
    """Metrics, per-example records, and details: exact match per field and the micro counts."""
    numbers = _number_fields(schema)
    validator = _validator(schema) if schema is not None else None
    per_example = []
    for gold, out in zip(targets, outputs):
        obj = parse_json_object(out)
        record = _score_one(fields, numbers, gold, obj)
        if validator is not None:
            record["schema_valid"] = int(obj is not None and validator.is_valid(obj))
        per_example.append(record)
    n = len(targets)
    micro = {k: sum(e[k] for e in per_example) for k in ("tp", "fp", "fn")}
    return {"metrics": aggregate(per_example, ()) if per_example else {}, "per_example": per_example,
            "details": {"per_field_exact_match": {f: sum(e["fields"][f] for e in per_example) / n if n else 0.0
                                                  for f in fields}, "micro": micro}}


def score(task: Any, examples: Sequence[Any], outputs: Sequence[str]) -> dict:
    return score_fields(task.fields, [ex.target for ex in examples], outputs, task.schema)


def aggregate(records: Sequence[Mapping], labels: Sequence[str]) -> dict[str, float]:
    tp, fp, fn = (sum(r[k] for r in records) for k in ("tp", "fp", "fn"))
    return {"field_f1": f1(tp, fp, fn), **{m: mean(records, key) for m, key in mean_of.items() if key in records[0]}}


def bootstrap(metric: str, records: Sequence[Mapping], idx: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Micro field-F1 per resample: the tp, fp and fn of the resampled records summed."""
    if metric != "field_f1":
        raise ValueError(f"no bootstrap rule for metric {metric!r}")
    tp, fp, fn = (np.asarray([r[k] for r in records], dtype=float)[idx].sum(axis=1) for k in ("tp", "fp", "fn"))
    return np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12), 0.0)

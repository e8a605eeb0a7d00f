"""Reading a task's files: UTF-8 text, JSONL/CSV records, frozen values, task.yaml's labels as typed, and the
judge's hand-marked outputs; where a split's file is. Every problem is a TaskError naming file, line and field.

Data root (recipes that read a shared data set in place instead of holding their own files): a path in
`splits:` may start with `${data_root}`, e.g. `train: ${data_root}/banking77/train.jsonl`. The root is the
environment variable HARNESS_DATA_ROOT when it is set (relative to the working directory), otherwise task.yaml's
`data_root:` key (relative to the task folder; the recipes in tasks/ say `../../../shared/datasets`, the
repository's sibling `shared/datasets`). `${data_root}` is the only placeholder; a path that uses it with neither
set, or a data file missing under the root, is a one-line error naming task.yaml, the split and the path.
Other split paths are relative to the task folder, as before.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

from harness.errors import TaskError

DATA_ROOT_ENV = "HARNESS_DATA_ROOT"
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


def read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TaskError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x}); save the file as UTF-8",
                        file=path, line=line) from None


def rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) for each non-blank record of a JSONL or CSV file."""
    text = read_text(path)
    out: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        start = 2
        for rec in reader:
            if any((v or "").strip() for v in rec.values() if isinstance(v, str)):
                out.append((start, rec))
            start = reader.line_num + 1
        return out
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(f"not valid JSON ({e.msg} at column {e.colno})", file=path, line=n) from None
        if not isinstance(rec, dict):
            raise TaskError(f"expected a JSON object, got {type(rec).__name__}", file=path, line=n)
        out.append((n, rec))
    return out


def freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def labels_as_written(text: str, labels: list | dict) -> list | dict:
    """The labels of task.yaml as typed: YAML 1.1 reads `labels: [yes, no]` as booleans (and `on`, `off`, `1.0`
    as others); a label is the text the data files use, so each scalar label is taken from the document as written."""
    try:
        root = yaml.compose(text)
        node = next(v for k, v in root.value if k.value == "labels")
    except (yaml.YAMLError, StopIteration, AttributeError, TypeError):
        return labels
    if isinstance(labels, list) and isinstance(node, yaml.SequenceNode):
        return [n.value if isinstance(n, yaml.ScalarNode) else v for n, v in zip(node.value, labels)]
    if isinstance(labels, dict) and isinstance(node, yaml.MappingNode) and all(
            isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode) for k, v in node.value):
        return {k.value: None if v.tag.endswith(":null") else v.value for k, v in node.value}  # label: description
    return labels


def judge(raw: Any, path: Path, directory: Path) -> Mapping[str, Any] | None:
    """The judge's rubric and the hand-marked outputs its agreement is measured on (judge.marked file)."""
    if raw is None:
        return None
    marked = []
    if raw.get("marked"):
        file = directory / str(raw["marked"])
        if not file.is_file():
            raise TaskError(f"hand-marked file not found: {file}", file=path, field="judge.marked")
        for line, rec in rows(file):
            mark = str(rec.get("mark", "")).upper()
            if mark not in ("PASS", "FAIL"):
                raise TaskError(f"must be PASS or FAIL, got {rec.get('mark')!r}", file=file, line=line, field="mark")
            for key in ("example_id", "output"):
                if not isinstance(rec.get(key), str) or not rec[key].strip():
                    raise TaskError("missing or empty", file=file, line=line, field=key)
            marked.append(MappingProxyType({"id": str(rec.get("id", f"marked-{line}")), "example_id": rec["example_id"],
                                            "output": rec["output"], "mark": mark, "line": line}))
    return MappingProxyType({"rubric": str(raw["rubric"]).strip(), "marked": tuple(marked),
                             "marked_file": str(raw.get("marked") or "")})


def _data_root(directory: Path, data_root: str | None) -> tuple[Path, str] | None:
    """The folder `${data_root}` stands for, and where it came from (for messages); None when not set."""
    env = os.environ.get(DATA_ROOT_ENV, "").strip()
    if env:
        return Path(env).expanduser().absolute(), DATA_ROOT_ENV
    if data_root:
        return (directory / Path(data_root.strip()).expanduser()).resolve(), "data_root in task.yaml"
    return None


def _split_path(directory: Path, split: str, raw: str, data_root: str | None, task_yaml: Path) -> tuple[Path, str]:
    """A split file named in task.yaml, with `${data_root}` expanded; the second item explains the root."""
    where = f"splits.{split}"
    raw = raw.strip()
    names = _PLACEHOLDER.findall(raw)
    if not names:
        return directory / raw, ""
    if names != ["data_root"] or not raw.startswith("${data_root}"):
        raise TaskError(f"only a leading ${{data_root}} can be substituted, got {raw!r}", file=task_yaml,
                        field=where)
    root = _data_root(directory, data_root)
    if root is None:
        raise TaskError(f"{raw!r} uses ${{data_root}} but no data root is set: set {DATA_ROOT_ENV} or add data_root: "
                        f"to task.yaml", file=task_yaml, field=where)
    rest = raw[len("${data_root}"):].lstrip("/\\")
    return root[0] / rest, f" (${{data_root}} = {root[0]}, from {root[1]}; set {DATA_ROOT_ENV} to the folder " \
                            f"that holds your copy of the data)"


def find_split_file(directory: Path, split: str, splits: Mapping[str, str], data_root: str | None,
                    task_yaml: Path) -> Path | None:
    """A split's file: named in task.yaml's `splits:` (which must exist), else <split>.jsonl or .csv, else None."""
    if split in splits:
        path, hint = _split_path(directory, split, splits[split], data_root, task_yaml)
        if not path.is_file():
            raise TaskError(f"{split} split file not found: {path}{hint}", file=task_yaml, field=f"splits.{split}")
        return path
    for suffix in (".jsonl", ".csv"):
        if (directory / f"{split}{suffix}").is_file():
            return directory / f"{split}{suffix}"
    return None

"""Load and validate a task definition: task.yaml plus JSONL/CSV splits, into frozen objects.

Every problem in the user's files is raised as a TaskError whose message names file, line and field.

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
import dataclasses
import hashlib
import io
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import yaml

from harness.errors import TaskError
from harness.rules import load_rules

TASK_TYPES = ("classification", "extraction", "generation")
SPLITS = ("train", "heldout", "dev", "knowledge", "control")
REQUIRED_SPLITS = ("train", "heldout")
DEFAULT_METRIC = {"classification": "accuracy", "extraction": "field_f1", "generation": "token_f1"}
TASK_KEYS = {"name", "type", "description", "instruction", "labels", "label_text", "fields", "metric", "metrics",
             "rules", "schema", "judge", "splits", "columns", "allow_overlap", "data_root", "stop", "max_sentences",
             "slices"}
# Metrics that need something declared in task.yaml, or computed by the runner with a model
NEEDS = {"rules_pass": "rules", "schema_valid_rate": "schema", "judge_pass": "judge"}
DATA_ROOT_ENV = "HARNESS_DATA_ROOT"
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True)
class Example:
    id: str
    input: str
    target: Any  # str (classification label / reference text) or a read-only mapping (extraction)
    line: int = 0  # line in the source file, for messages
    meta: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def target_json(self) -> Any:
        return dict(self.target) if isinstance(self.target, Mapping) else self.target


@dataclass(frozen=True)
class Task:
    name: str
    type: str
    instruction: str
    metric: str
    directory: Path
    splits: Mapping[str, tuple[Example, ...]]
    files: Mapping[str, Path]
    data_hashes: Mapping[str, str]
    labels: tuple[str, ...] = ()
    label_descriptions: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    label_text: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    fields: tuple[str, ...] = ()
    description: str = ""
    overlap: tuple[tuple[str, str], ...] = ()  # (heldout id, train id) pairs with identical input
    metrics: tuple[str, ...] = ()              # the metrics to compute besides the always-on ones (task.yaml)
    rules: tuple[Mapping[str, Any], ...] = ()  # output rules (harness/rules.py)
    schema: Mapping[str, Any] | None = None    # JSON Schema of an extraction answer
    judge: Mapping[str, Any] | None = None     # {rubric, marked: [hand-marked examples]} for an LLM judge
    cut_inputs: tuple[str, ...] = ()           # ids whose input was longer than the load's max_input_chars (cut)
    max_input_chars: int | None = None         # that limit
    shared_ids: tuple[str, ...] = ()           # ids used in both train and held-out (usually a data bug; warned)
    stop: tuple[str, ...] = ()                 # generation ends at any of these strings (e.g. "\n")
    max_sentences: int | None = None           # generation ends after this many sentences (short-answer tasks)
    slices: tuple[str, ...] = ()               # metadata fields of held-out examples to break results down by

    @property
    def train(self) -> tuple[Example, ...]:
        return self.splits["train"]

    @property
    def heldout(self) -> tuple[Example, ...]:
        return self.splits["heldout"]

    def split(self, name: str) -> tuple[Example, ...]:
        return self.splits.get(name, ())

    def answer_settings(self) -> dict:
        """How generated answers end (stop strings, sentence limit): part of every arm's fingerprint when set."""
        return {k: v for k, v in (("stop", list(self.stop)), ("max_sentences", self.max_sentences)) if v}

    def text_of(self, label: str) -> str:
        """The readable text shown to (and scored by) the model for a label."""
        return self.label_text.get(label, label)


def normalize_text(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def exact_overlap(heldout: Sequence[tuple[str, str]], other: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(held-out id, id of the first `other` item with the same text) for each held-out (id, text) whose text equals
    an `other` text after `normalize_text`: the leakage check of load_task and of the data checks."""
    seen: dict[str, str] = {}
    for oid, text in other:
        seen.setdefault(normalize_text(text), oid)
    return [(hid, seen[normalize_text(text)]) for hid, text in heldout if normalize_text(text) in seen]


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TaskError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x}); save the file as UTF-8",
                        file=path, line=line) from None


def _rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) for each non-blank record of a JSONL or CSV file."""
    text = _read_text(path)
    rows: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        start = 2
        for rec in reader:
            if any((v or "").strip() for v in rec.values() if isinstance(v, str)):
                rows.append((start, rec))
            start = reader.line_num + 1
        return rows
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(f"not valid JSON ({e.msg} at column {e.colno})", file=path, line=n) from None
        if not isinstance(rec, dict):
            raise TaskError(f"expected a JSON object, got {type(rec).__name__}", file=path, line=n)
        rows.append((n, rec))
    return rows


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


class _Spec:
    """The validated contents of task.yaml."""

    def __init__(self, path: Path, raw: Any, name: str):
        if not isinstance(raw, dict):
            raise TaskError("expected a mapping at the top level", file=path, line=1)
        unknown = sorted(set(raw) - TASK_KEYS)
        if unknown:
            raise TaskError(f"unknown key (allowed: {', '.join(sorted(TASK_KEYS))})", file=path,
                            field=unknown[0])
        self.path = path
        self.name = str(raw.get("name") or name)
        self.type = raw.get("type")
        if self.type not in TASK_TYPES:
            raise TaskError(f"must be one of {', '.join(TASK_TYPES)}, got {self.type!r}", file=path, field="type")
        self.instruction = raw.get("instruction")
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise TaskError("missing or empty: say what the model must do", file=path, field="instruction")
        self.description = str(raw.get("description") or "")
        self.metric = raw.get("metric") or DEFAULT_METRIC[self.type]
        self.allow_overlap = bool(raw.get("allow_overlap", False))
        self.labels: tuple[str, ...] = ()
        self.label_descriptions: dict[str, str] = {}
        labels = raw.get("labels")
        if self.type == "classification":
            if isinstance(labels, dict):
                self.labels = tuple(str(k) for k in labels)
                self.label_descriptions = {str(k): str(v) for k, v in labels.items() if v}
            elif isinstance(labels, list):
                self.labels = tuple(str(v) for v in labels)
            if len(self.labels) < 2:
                raise TaskError("a classification task needs at least two labels (a list, or label: description)",
                                file=path, field="labels")
            if len(set(self.labels)) != len(self.labels):
                raise TaskError("labels are not unique", file=path, field="labels")
        elif labels:
            raise TaskError(f"only classification tasks have labels (type is {self.type})", file=path, field="labels")
        label_text = raw.get("label_text") or {}
        if not isinstance(label_text, dict) or set(label_text) - set(self.labels):
            raise TaskError("must map labels of the label set to readable text", file=path, field="label_text")
        self.label_text = {str(k): str(v) for k, v in label_text.items()}
        fields = raw.get("fields") or []
        if self.type == "extraction" and (not isinstance(fields, list) or not fields):
            raise TaskError("an extraction task needs a list of field names", file=path, field="fields")
        self.fields = tuple(str(f) for f in fields)
        splits = raw.get("splits") or {}
        if not isinstance(splits, dict) or set(splits) - set(SPLITS):
            raise TaskError(f"must map split names ({', '.join(SPLITS)}) to files", file=path, field="splits")
        if not all(isinstance(v, str) and v.strip() for v in splits.values()):
            raise TaskError("each split must name a file path", file=path, field="splits")
        self.splits = dict(splits)
        self.data_root = raw.get("data_root")
        if self.data_root is not None and (not isinstance(self.data_root, str) or not self.data_root.strip()):
            raise TaskError("must be a folder path (relative to the task folder)", file=path, field="data_root")
        columns = raw.get("columns") or {}
        if not isinstance(columns, dict) or set(columns) - {"id", "input", "target", "doc_ids", "facts"}:
            raise TaskError("must map id / input / target / doc_ids / facts to your file's column names", file=path,
                            field="columns")
        self.columns = {"id": "id", "input": "input", "target": "target", "doc_ids": "doc_ids", "facts": "facts",
                        **columns}
        if self.metric not in _metric_names(self.type):
            raise TaskError(f"unknown metric {self.metric!r} for {self.type} (choose from "
                            f"{', '.join(_metric_names(self.type))})", file=path, field="metric")
        metrics = raw.get("metrics") or []
        if not isinstance(metrics, list):
            raise TaskError("must be a list of metric names", file=path, field="metrics")
        for m in metrics:
            if m not in _metric_names(self.type):
                raise TaskError(f"unknown metric {m!r} for {self.type} (choose from "
                                f"{', '.join(_metric_names(self.type))})", file=path, field="metrics")
        self.metrics = tuple(dict.fromkeys([self.metric, *map(str, metrics)]))
        self.rules = load_rules(raw.get("rules"), path)
        self._answer_end(raw)
        slices = raw.get("slices") or []
        if not isinstance(slices, list) or not all(isinstance(f, str) and f.strip() for f in slices):
            raise TaskError("must be a list of metadata field names of the held-out examples (e.g. [region])",
                            file=path, field="slices")
        self.slices = tuple(slices)
        self.schema = self._schema(raw.get("schema"))
        self.judge_raw = raw.get("judge")
        if self.judge_raw is not None and (not isinstance(self.judge_raw, dict) or not str(
                self.judge_raw.get("rubric") or "").strip()):
            raise TaskError("must be a mapping with a rubric (and optionally marked: FILE of hand-marked outputs)",
                            file=path, field="judge")
        for m in self.metrics:
            need = NEEDS.get(m)
            if need and not getattr(self, need if need != "judge" else "judge_raw"):
                raise TaskError(f"metric {m!r} needs `{need}:` in task.yaml", file=path, field="metrics")

    def _answer_end(self, raw: dict) -> None:
        """`stop:` (strings that end a generated answer) and `max_sentences:` (a sentence limit), generation only."""
        stop, most = raw.get("stop"), raw.get("max_sentences")
        for key, value in (("stop", stop), ("max_sentences", most)):
            if value is not None and self.type != "generation":
                raise TaskError(f"only generation tasks end answers early (type is {self.type})", file=self.path,
                                field=key)
        stop = [stop] if isinstance(stop, str) else stop
        if stop is not None and (not isinstance(stop, list) or not all(isinstance(x, str) and x for x in stop)):
            raise TaskError('must be a list of non-empty strings, e.g. ["\\n"]', file=self.path, field="stop")
        self.stop = tuple(stop or ())
        if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
            raise TaskError(f"must be a positive whole number, got {most!r}", file=self.path, field="max_sentences")
        self.max_sentences = most

    def _schema(self, value: Any) -> Mapping[str, Any] | None:
        if value is None:
            return None
        if self.type != "extraction":
            raise TaskError(f"only extraction tasks have a schema (type is {self.type})", file=self.path,
                            field="schema")
        if isinstance(value, str):
            file = self.path.parent / value
            if not file.is_file():
                raise TaskError(f"schema file not found: {file}", file=self.path, field="schema")
            try:
                value = json.loads(_read_text(file))
            except json.JSONDecodeError as e:
                raise TaskError(f"not valid JSON ({e.msg})", file=file, line=e.lineno) from None
        if not isinstance(value, dict):
            raise TaskError("must be a JSON Schema object or a file holding one", file=self.path, field="schema")
        import jsonschema

        try:
            jsonschema.validators.validator_for(value).check_schema(value)
        except jsonschema.SchemaError as e:
            raise TaskError(f"not a valid JSON Schema ({e.message})", file=self.path, field="schema") from None
        return value


def _metric_names(task_type: str) -> tuple[str, ...]:
    return {"classification": ("accuracy", "macro_f1"),
            "extraction": ("field_f1", "field_accuracy", "record_exact_match", "valid_json_rate",
                           "schema_valid_rate"),
            "generation": ("exact_match", "token_f1", "chrf", "rouge_l", "embedding_cosine", "rules_pass",
                           "judge_pass", "fact_recall", "answer_exact")}[task_type]


def _example(spec: _Spec, split: str, path: Path, line: int, rec: dict) -> Example:
    cols = spec.columns
    if cols["id"] is None:
        ex_id = f"{split}-{line}"
    else:
        if cols["id"] not in rec or rec[cols["id"]] in (None, ""):
            raise TaskError("missing (set columns.id in task.yaml, or columns.id: null to number lines)",
                            file=path, line=line, field=cols["id"])
        ex_id = str(rec[cols["id"]])
    if split == "knowledge":
        text = rec.get(cols["input"], rec.get("text"))
        if not isinstance(text, str) or not text.strip():
            raise TaskError("missing or empty document text", file=path, line=line, field=cols["input"])
        meta = {k: v for k, v in rec.items() if k not in (cols["id"], cols["input"], "text")}
        return Example(ex_id, text, None, line, _freeze(meta))
    text = rec.get(cols["input"])
    if not isinstance(text, str) or not text.strip():
        raise TaskError("missing or empty input", file=path, line=line, field=cols["input"])
    if cols["target"] not in rec or rec[cols["target"]] in (None, ""):
        raise TaskError("missing target", file=path, line=line, field=cols["target"])
    target = rec[cols["target"]]
    if spec.type == "classification":
        target = str(target)
        if target not in spec.labels:
            shown = ", ".join(spec.labels[:12]) + (", …" if len(spec.labels) > 12 else "")
            raise TaskError(f"label {target!r} is not in the task's label set ({shown})",
                            file=path, line=line, field=cols["target"])
    elif spec.type == "extraction":
        if isinstance(target, str):
            try:
                target = json.loads(target)
            except json.JSONDecodeError:
                target = None
        if not isinstance(target, dict):
            raise TaskError("must be a JSON object with the task's fields", file=path, line=line, field=cols["target"])
        extra = sorted(set(target) - set(spec.fields))
        if extra:
            raise TaskError(f"key {extra[0]!r} is not one of the task's fields ({', '.join(spec.fields)})",
                            file=path, line=line, field=cols["target"])
        if spec.schema is not None:
            import jsonschema

            problem = jsonschema.exceptions.best_match(
                jsonschema.validators.validator_for(spec.schema)(spec.schema).iter_errors(target))
            if problem is not None:
                where = ".".join(str(p) for p in problem.absolute_path)
                raise TaskError(f"the gold answer breaks the task's schema ({problem.message})", file=path,
                                line=line, field=f"{cols['target']}.{where}" if where else cols["target"])
        target = MappingProxyType({f: target.get(f) for f in spec.fields})
    else:
        if isinstance(target, list):
            if not all(isinstance(t, str) for t in target):
                raise TaskError("references must be strings", file=path, line=line, field=cols["target"])
            target = tuple(target)
        else:
            target = str(target)
    meta = {k: v for k, v in rec.items() if k not in (cols["id"], cols["input"], cols["target"])}
    facts = rec.get(cols["facts"])  # declared facts of the answer (harness/facts.py)
    if facts is not None and spec.type == "generation":  # other task types keep such a field as metadata
        if not _valid_facts(facts):
            raise TaskError('must be a non-empty list of facts, each a phrase or a list of acceptable phrasings '
                            '(e.g. ["27 days", ["Lantern", "the HR portal"]])', file=path, line=line,
                            field=cols["facts"])
        meta["facts"] = facts
    gold = rec.get(cols["doc_ids"])  # ids of the knowledge documents that hold the answer (retrieval recall)
    if gold not in (None, "", []):
        meta["doc_ids"] = [str(gold)] if isinstance(gold, (str, int)) else [str(g) for g in gold]
    return Example(ex_id, text, target, line, _freeze(meta))


def _valid_facts(facts: Any) -> bool:
    def phrase(x: Any) -> bool:
        return isinstance(x, str) and bool(x.strip())

    return isinstance(facts, list) and bool(facts) and all(
        phrase(f) or (isinstance(f, list) and f and all(map(phrase, f))) for f in facts)


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


def _load_split(spec: _Spec, split: str, path: Path, limit: int | None, sample: str = "first",
                seed: int = 0, max_chars: int | None = None, cut: list | None = None) -> tuple[Example, ...]:
    rows = _rows(path)
    if not rows:
        raise TaskError(f"split '{split}' is empty", file=path)
    examples, seen = [], {}
    for line, rec in rows:
        ex = _example(spec, split, path, line, rec)
        if max_chars and split != "knowledge" and len(ex.input) > max_chars:  # documents are chunked later
            ex = dataclasses.replace(ex, input=cut_input(ex.input, max_chars))
            if cut is not None:
                cut.append(ex.id)
        if ex.id in seen:
            raise TaskError(f"duplicate id {ex.id!r} (first at line {seen[ex.id]})", file=path, line=line,
                            field=spec.columns["id"] or "id")
        seen[ex.id] = line
        examples.append(ex)
    return subset(examples, limit, sample, seed, by_label=spec.type == "classification")


def _data_root(directory: Path, spec: _Spec) -> tuple[Path, str] | None:
    """The folder `${data_root}` stands for, and where it came from (for messages); None when not set."""
    env = os.environ.get(DATA_ROOT_ENV, "").strip()
    if env:
        return Path(env).expanduser().absolute(), DATA_ROOT_ENV
    if spec.data_root:
        return (directory / Path(spec.data_root.strip()).expanduser()).resolve(), "data_root in task.yaml"
    return None


def _split_path(directory: Path, split: str, spec: _Spec) -> tuple[Path, str]:
    """A split file named in task.yaml, with `${data_root}` expanded; the second item explains the root."""
    where = f"splits.{split}"
    raw = spec.splits[split].strip()
    names = _PLACEHOLDER.findall(raw)
    if not names:
        return directory / raw, ""
    if names != ["data_root"] or not raw.startswith("${data_root}"):
        raise TaskError(f"only a leading ${{data_root}} can be substituted, got {raw!r}", file=spec.path,
                        field=where)
    root = _data_root(directory, spec)
    if root is None:
        raise TaskError(f"{raw!r} uses ${{data_root}} but no data root is set: set {DATA_ROOT_ENV} or add data_root: "
                        f"to task.yaml", file=spec.path, field=where)
    rest = raw[len("${data_root}"):].lstrip("/\\")
    return root[0] / rest, f" (${{data_root}} = {root[0]}, from {root[1]}; set {DATA_ROOT_ENV} to the folder " \
                            f"that holds your copy of the data)"


def _find_split_file(directory: Path, split: str, spec: _Spec) -> Path | None:
    if split in spec.splits:
        path, hint = _split_path(directory, split, spec)
        if not path.is_file():
            raise TaskError(f"{split} split file not found: {path}{hint}", file=spec.path, field=f"splits.{split}")
        return path
    for suffix in (".jsonl", ".csv"):
        if (directory / f"{split}{suffix}").is_file():
            return directory / f"{split}{suffix}"
    return None


def load_task(directory: str | Path, *, limit_train: int | None = None, limit_heldout: int | None = None,
              limit_per_class: int | None = None, sample: str = "first", sample_seed: int = 0,
              allow_overlap: bool | None = None, max_input_chars: int | None = None) -> Task:
    """Load tasks/<name>/ (task.yaml + splits); raise TaskError naming file, line and field on bad input.
    `limit_*` keep the first N examples (`sample="first"`) or a seeded stratified subset (see `subset`);
    `limit_per_class` keeps N train examples of each label instead (see `per_class`).
    Inputs longer than `max_input_chars` are cut in the middle; their ids are in `Task.cut_inputs`."""
    if sample not in SAMPLING:
        raise TaskError(f"limit.sample must be one of {', '.join(SAMPLING)}, got {sample!r}")
    if limit_per_class and limit_train:
        raise TaskError("limit.per_class and limit.train cannot be combined: set one (N per label, or N in all)")
    directory = Path(directory)
    path = directory / "task.yaml"
    if not path.is_file():
        raise TaskError(f"no task.yaml in task directory {directory}")
    try:
        raw = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise TaskError(f"not valid YAML ({getattr(e, 'problem', e)})", file=path,
                        line=mark.line + 1 if mark else None) from None
    if isinstance(raw, dict) and isinstance(raw.get("labels"), (list, dict)):
        raw["labels"] = _labels_as_written(_read_text(path), raw["labels"])
    spec = _Spec(path, raw, directory.name)
    limits = {"train": limit_train, "heldout": limit_heldout}
    splits, files, hashes, cut = {}, {}, {}, []
    for split in SPLITS:
        file = _find_split_file(directory, split, spec)
        if file is None:
            if split in REQUIRED_SPLITS:
                raise TaskError(f"required split '{split}' not found (expected {split}.jsonl or {split}.csv, "
                                f"or splits.{split} in task.yaml)", file=path)
            continue
        splits[split] = _load_split(spec, split, file, limits.get(split), sample, sample_seed, max_input_chars, cut)
        files[split] = file
        hashes[split] = hashlib.sha256(file.read_bytes()).hexdigest()
    if limit_per_class:
        if spec.type != "classification":
            raise TaskError(f"limit.per_class needs a classification task ({spec.name} is {spec.type}); use "
                            f"limit.train", file=path)
        splits["train"] = per_class(splits["train"], limit_per_class, sample, sample_seed)
    train_ids = {ex.id for ex in splits["train"]}
    overlap = tuple(exact_overlap([(ex.id, ex.input) for ex in splits["heldout"]],
                                  [(ex.id, ex.input) for ex in splits["train"]]))
    for name in spec.slices:  # every held-out example names its slice
        missing = next((ex for ex in splits["heldout"] if ex.meta.get(name) in (None, "")), None)
        if missing is not None:
            raise TaskError(f"missing slice value (task.yaml declares slices: [{', '.join(spec.slices)}])",
                            file=files["heldout"], line=missing.line, field=name)
    allowed = spec.allow_overlap if allow_overlap is None else allow_overlap
    if overlap and not allowed:
        first = next(ex for ex in splits["heldout"] if ex.id == overlap[0][0])
        raise TaskError(f"{len(overlap)} held-out example(s) have the same input as a train example (first: id "
                        f"{overlap[0][0]!r} = train id {overlap[0][1]!r}); remove them, or set allow_overlap: true "
                        f"in task.yaml (or allow_overlap=true) to accept the leak",
                        file=files["heldout"], line=first.line, field=spec.columns["input"])
    return Task(name=spec.name, type=spec.type, instruction=spec.instruction.strip(), metric=spec.metric,
                directory=directory, splits=MappingProxyType(splits), files=MappingProxyType(files),
                data_hashes=MappingProxyType(hashes), labels=spec.labels,
                label_descriptions=MappingProxyType(spec.label_descriptions),
                label_text=MappingProxyType(spec.label_text), fields=spec.fields,
                description=spec.description, overlap=overlap, metrics=spec.metrics, rules=spec.rules,
                schema=_freeze(spec.schema) if spec.schema is not None else None,
                judge=_judge(spec, directory), cut_inputs=tuple(dict.fromkeys(cut)), max_input_chars=max_input_chars,
                shared_ids=tuple(ex.id for ex in splits["heldout"] if ex.id in train_ids),
                stop=spec.stop, max_sentences=spec.max_sentences, slices=spec.slices)


def _labels_as_written(text: str, labels: list | dict) -> list | dict:
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


def _judge(spec: _Spec, directory: Path) -> Mapping[str, Any] | None:
    """The judge's rubric and the hand-marked outputs its agreement is measured on (judge.marked file)."""
    raw = spec.judge_raw
    if raw is None:
        return None
    marked = []
    if raw.get("marked"):
        file = directory / str(raw["marked"])
        if not file.is_file():
            raise TaskError(f"hand-marked file not found: {file}", file=spec.path, field="judge.marked")
        for line, rec in _rows(file):
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

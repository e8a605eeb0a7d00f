"""Load and validate a task definition: task.yaml plus JSONL/CSV splits, into frozen objects.

Every problem in the user's files is raised as a TaskError whose message names file, line and field. What is
particular to a task's `type:` (its keys, gold answers, metrics) is its task kind's (harness/kinds); where split
files are found, `${data_root}` included, is harness/taskdata.py's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import yaml

from harness import kinds
from harness.errors import TaskError
from harness.rules import load_rules
from harness.sampling import SAMPLING, cut_input, per_class, subset
from harness.taskdata import find_split_file, freeze, judge, labels_as_written, read_text, rows

SPLITS = ("train", "heldout", "dev", "knowledge", "control")
REQUIRED_SPLITS = ("train", "heldout")
TASK_KEYS = {"name", "type", "description", "instruction", "metric", "metrics", "rules", "judge", "splits", "columns",
             "allow_overlap", "data_root", "slices"}  # and the keys of the task kinds (harness/kinds)
# Metrics that need something declared in task.yaml, or computed by the runner with a model
NEEDS = {"rules_pass": "rules", "schema_valid_rate": "schema", "judge_pass": "judge"}


@dataclass(frozen=True)
class Example:
    id: str
    input: str
    target: Any  # as its task kind reads it: a label, a read-only mapping, reference text(s)
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


class _Spec:
    """The validated contents of task.yaml; `settings` are its task kind's keys (harness/kinds)."""

    def __init__(self, path: Path, raw: Any, name: str):
        if not isinstance(raw, dict):
            raise TaskError("expected a mapping at the top level", file=path, line=1)
        allowed = TASK_KEYS | kinds.task_keys()
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise TaskError(f"unknown key (allowed: {', '.join(sorted(allowed))})", file=path, field=unknown[0])
        self.path = path
        self.name = str(raw.get("name") or name)
        self.type = raw.get("type")
        if self.type not in kinds.names():
            raise TaskError(f"must be one of {', '.join(kinds.names())}, got {self.type!r}", file=path,
                            field="type")
        self.kind = kinds.get(self.type)
        self._refuse_other_kinds_keys(raw)
        self.instruction = raw.get("instruction")
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise TaskError("missing or empty: say what the model must do", file=path, field="instruction")
        self.description = str(raw.get("description") or "")
        self.allow_overlap = bool(raw.get("allow_overlap", False))
        self.settings = self.kind.read_spec(raw, path)
        self._files(raw)
        self.metric = raw.get("metric") or self.kind.default_metric
        self.metrics = self._metrics(raw)
        self.rules = load_rules(raw.get("rules"), path)
        slices = raw.get("slices") or []
        if not isinstance(slices, list) or not all(isinstance(f, str) and f.strip() for f in slices):
            raise TaskError("must be a list of metadata field names of the held-out examples (e.g. [region])",
                            file=path, field="slices")
        self.slices = tuple(slices)
        self.judge_raw = raw.get("judge")
        if self.judge_raw is not None and (not isinstance(self.judge_raw, dict) or not str(
                self.judge_raw.get("rubric") or "").strip()):
            raise TaskError("must be a mapping with a rubric (and optionally marked: FILE of hand-marked outputs)",
                            file=path, field="judge")
        have = {"rules": self.rules, "schema": self.settings.get("schema"), "judge": self.judge_raw}
        for m in self.metrics:
            if m in NEEDS and not have[NEEDS[m]]:
                raise TaskError(f"metric {m!r} needs `{NEEDS[m]}:` in task.yaml", file=path, field="metrics")

    def _refuse_other_kinds_keys(self, raw: dict) -> None:
        for key in sorted(kinds.task_keys() - self.kind.keys):
            if raw.get(key) not in (None, "", [], {}):
                owners = " and ".join(k for k in kinds.names() if key in kinds.get(k).keys)
                raise TaskError(f"only {owners} tasks have this key (type is {self.type})", file=self.path,
                                field=key)

    def _files(self, raw: dict) -> None:
        """splits: (file per split), data_root: (what ${data_root} stands for), columns: (the files' names)."""
        path, splits = self.path, raw.get("splits") or {}
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

    def _metrics(self, raw: dict) -> tuple[str, ...]:
        """The primary metric first, then the others task.yaml asks for: each in the kind's catalogue."""
        catalogue = self.kind.metrics
        metrics = raw.get("metrics") or []
        if not isinstance(metrics, list):
            raise TaskError("must be a list of metric names", file=self.path, field="metrics")
        for m, key in [(self.metric, "metric"), *((m, "metrics") for m in metrics)]:
            if m not in catalogue:
                raise TaskError(f"unknown metric {m!r} for {self.type} (choose from {', '.join(catalogue)})",
                                file=self.path, field=key)
        return tuple(dict.fromkeys([self.metric, *map(str, metrics)]))


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
        return Example(ex_id, text, None, line, freeze(meta))
    text = rec.get(cols["input"])
    if not isinstance(text, str) or not text.strip():
        raise TaskError("missing or empty input", file=path, line=line, field=cols["input"])
    if cols["target"] not in rec or rec[cols["target"]] in (None, ""):
        raise TaskError("missing target", file=path, line=line, field=cols["target"])
    where = kinds.Where(path, line, cols)
    target = spec.kind.parse_target(spec.settings, rec[cols["target"]], where)
    meta = {k: v for k, v in rec.items() if k not in (cols["id"], cols["input"], cols["target"])}
    meta.update(spec.kind.example_meta(spec.settings, rec, where))  # e.g. generation's declared facts
    gold = rec.get(cols["doc_ids"])  # ids of the knowledge documents that hold the answer (retrieval recall)
    if gold not in (None, "", []):
        meta["doc_ids"] = [str(gold)] if isinstance(gold, (str, int)) else [str(g) for g in gold]
    return Example(ex_id, text, target, line, freeze(meta))


def _load_split(spec: _Spec, split: str, path: Path, limit: int | None, sample: str = "first",
                seed: int = 0, max_chars: int | None = None, cut: list | None = None) -> tuple[Example, ...]:
    records = rows(path)
    if not records:
        raise TaskError(f"split '{split}' is empty", file=path)
    examples, seen = [], {}
    for line, rec in records:
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
    return subset(examples, limit, sample, seed, by_label=spec.kind.labelled)


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
    spec = _read_spec(directory)
    cut: list[str] = []
    splits, files, hashes = _load_splits(directory, spec, {"train": limit_train, "heldout": limit_heldout},
                                         (sample, sample_seed), max_input_chars, cut)
    if limit_per_class:
        if not spec.kind.labelled:
            raise TaskError(f"limit.per_class needs a classification task ({spec.name} is {spec.type}); use "
                            f"limit.train", file=spec.path)
        splits["train"] = per_class(splits["train"], limit_per_class, sample, sample_seed)
    train_ids = {ex.id for ex in splits["train"]}
    overlap = tuple(exact_overlap([(ex.id, ex.input) for ex in splits["heldout"]],
                                  [(ex.id, ex.input) for ex in splits["train"]]))
    _check_slices(spec, splits["heldout"], files["heldout"])
    if overlap and not (spec.allow_overlap if allow_overlap is None else allow_overlap):
        first = next(ex for ex in splits["heldout"] if ex.id == overlap[0][0])
        raise TaskError(f"{len(overlap)} held-out example(s) have the same input as a train example (first: id "
                        f"{overlap[0][0]!r} = train id {overlap[0][1]!r}); remove them, or set allow_overlap: true "
                        f"in task.yaml (or allow_overlap=true) to accept the leak",
                        file=files["heldout"], line=first.line, field=spec.columns["input"])
    return Task(name=spec.name, type=spec.type, instruction=spec.instruction.strip(), metric=spec.metric,
                directory=directory, splits=MappingProxyType(splits), files=MappingProxyType(files),
                data_hashes=MappingProxyType(hashes), description=spec.description, overlap=overlap,
                metrics=spec.metrics, rules=spec.rules, judge=judge(spec.judge_raw, spec.path, directory),
                cut_inputs=tuple(dict.fromkeys(cut)), max_input_chars=max_input_chars,
                shared_ids=tuple(ex.id for ex in splits["heldout"] if ex.id in train_ids), slices=spec.slices,
                **{key: freeze(value) for key, value in spec.settings.items()})


def _read_spec(directory: Path) -> _Spec:
    path = directory / "task.yaml"
    if not path.is_file():
        raise TaskError(f"no task.yaml in task directory {directory}")
    try:
        raw = yaml.safe_load(read_text(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise TaskError(f"not valid YAML ({getattr(e, 'problem', e)})", file=path,
                        line=mark.line + 1 if mark else None) from None
    if isinstance(raw, dict) and isinstance(raw.get("labels"), (list, dict)):
        raw["labels"] = labels_as_written(read_text(path), raw["labels"])
    return _Spec(path, raw, directory.name)


def _load_splits(directory: Path, spec: _Spec, limits: Mapping[str, int | None], sampling: tuple[str, int],
                 max_input_chars: int | None, cut: list) -> tuple[dict, dict, dict]:
    """Every split found: its examples, file and content hash (the required ones must be there)."""
    splits, files, hashes = {}, {}, {}
    for split in SPLITS:
        file = find_split_file(directory, split, spec.splits, spec.data_root, spec.path)
        if file is None:
            if split in REQUIRED_SPLITS:
                raise TaskError(f"required split '{split}' not found (expected {split}.jsonl or {split}.csv, "
                                f"or splits.{split} in task.yaml)", file=spec.path)
            continue
        splits[split] = _load_split(spec, split, file, limits.get(split), *sampling, max_input_chars, cut)
        files[split] = file
        hashes[split] = hashlib.sha256(file.read_bytes()).hexdigest()
    return splits, files, hashes


def _check_slices(spec: _Spec, heldout: Sequence[Example], file: Path) -> None:
    """Every held-out example names its value of each declared slice."""
    for name in spec.slices:
        missing = next((ex for ex in heldout if ex.meta.get(name) in (None, "")), None)
        if missing is not None:
            raise TaskError(f"missing slice value (task.yaml declares slices: [{', '.join(spec.slices)}])",
                            file=file, line=missing.line, field=name)

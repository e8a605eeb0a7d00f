"""Load and validate a task definition: task.yaml plus JSONL/CSV splits, into frozen objects.

Every problem in the user's files is raised as a TaskError whose message names file, line and field. task.yaml's
keys are validated in harness/taskspec.py; what is particular to a task's `type:` (its keys, gold answers, metrics)
is its task kind's (harness/kinds); where split files are found, `${data_root}` included, is harness/taskdata.py's.
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
from harness.sampling import SAMPLING, cut_input, per_class, subset
from harness.taskdata import find_split_file, freeze, judge, labels_as_written, read_text, rows
from harness.taskspec import REQUIRED_SPLITS, SPLITS, TaskSpec


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
    model: Mapping[str, Any] | None = None     # the recipe's model (task.yaml `model:`), unless a run names one

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


def _example(spec: TaskSpec, split: str, path: Path, line: int, rec: dict) -> Example:
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


def _load_split(spec: TaskSpec, split: str, path: Path, limit: int | None, sample: str = "first",
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
                model=freeze(spec.model),
                **{key: freeze(value) for key, value in spec.settings.items()})


def _read_spec(directory: Path) -> TaskSpec:
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
    return TaskSpec(path, raw, directory.name)


def _load_splits(directory: Path, spec: TaskSpec, limits: Mapping[str, int | None], sampling: tuple[str, int],
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


def _check_slices(spec: TaskSpec, heldout: Sequence[Example], file: Path) -> None:
    """Every held-out example names its value of each declared slice."""
    for name in spec.slices:
        missing = next((ex for ex in heldout if ex.meta.get(name) in (None, "")), None)
        if missing is not None:
            raise TaskError(f"missing slice value (task.yaml declares slices: [{', '.join(spec.slices)}])",
                            file=file, line=missing.line, field=name)

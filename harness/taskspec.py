"""task.yaml read and validated (TaskSpec): its keys, the task kind's own keys (harness/kinds), where the splits are
and how their columns are named, the metrics, rules, slices, judge and the recipe's model. Every problem is a
TaskError naming task.yaml and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import kinds
from harness.errors import TaskError
from harness.rules import load_rules

SPLITS = ("train", "heldout", "dev", "knowledge", "control")
REQUIRED_SPLITS = ("train", "heldout")
TASK_KEYS = {"name", "type", "description", "instruction", "metric", "metrics", "rules", "judge", "splits", "columns",
             "allow_overlap", "data_root", "slices", "model"}  # and the keys of the task kinds (harness/kinds)
# Metrics that need something declared in task.yaml, or computed by the runner with a model
NEEDS = {"rules_pass": "rules", "schema_valid_rate": "schema", "judge_pass": "judge"}


class TaskSpec:
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
        self.model = self._model(raw.get("model"))
        self.judge_raw = raw.get("judge")
        if self.judge_raw is not None and (not isinstance(self.judge_raw, dict) or not str(
                self.judge_raw.get("rubric") or "").strip()):
            raise TaskError("must be a mapping with a rubric (and optionally marked: FILE of hand-marked outputs)",
                            file=path, field="judge")
        have = {"rules": self.rules, "schema": self.settings.get("schema"), "judge": self.judge_raw}
        for m in self.metrics:
            if m in NEEDS and not have[NEEDS[m]]:
                raise TaskError(f"metric {m!r} needs `{NEEDS[m]}:` in task.yaml", file=path, field="metrics")

    def _model(self, model: Any) -> dict | None:
        """The recipe's model (`model: packaged:gemma3-270m`, or a mapping of conf/model/ keys): used instead of the
        run's default model unless the command line names one (see harness/runner/plan.py, `model_from_task`)."""
        if model is None:
            return None
        if isinstance(model, str):
            model = {"name_or_path": model}
        if not isinstance(model, dict) or not isinstance(model.get("name_or_path"), str) or not model[
                "name_or_path"].strip():
            raise TaskError("must be a model name (e.g. packaged:gemma3-270m, or a Hugging Face id) or a mapping "
                            "with name_or_path and other keys of conf/model/", file=self.path, field="model")
        return dict(model)

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

"""The TaskKind protocol: everything the harness asks of a task kind (classification, extraction, generation …).

A kind owns its task.yaml keys, how a gold answer is read and written, its metric catalogue, per-example scoring
and aggregation, the bootstrap of its ratio metrics, and the grammar a constrained decoder follows. Callers ask
`harness.kinds.of(task)` (or `harness.kinds.get(comparison["task_type"])`) and never test the type string.
A kind is any object with these members; the built-in ones are modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from harness.errors import TaskError


@dataclass(frozen=True)
class Where:
    """Where a data record was read (file, line, the task's column names), so a kind's error names them."""

    file: Path
    line: int
    columns: Mapping[str, Any]

    def error(self, message: str, column: str = "target", suffix: str = "") -> TaskError:
        return TaskError(message, file=self.file, line=self.line, field=f"{self.columns[column]}{suffix}")


@dataclass(frozen=True)
class Breakdown:
    """A per-arm breakdown the report plots: file name, title, and details (metrics.json) → {name: value}."""

    figure: str
    title: str
    values: Callable[[Mapping[str, Any]], Mapping[str, float]]


class TaskKind(Protocol):
    name: str                       # the `type:` of task.yaml, recorded as comparison.json's task_type
    metrics: tuple[str, ...]        # the metrics task.yaml may choose (metric: / metrics:)
    default_metric: str             # the primary metric when task.yaml names none
    mean_of: Mapping[str, str]      # metric → the per-example value it averages (the others are ratios)
    proxy_of: Mapping[str, str]     # ratio metric → a per-example value that stands for it (forgetting check)
    labelled: bool                  # answers are one of a closed label set: label scoring, stratified subsets,
                                    # per-class limits, balanced demonstrations, the label-balance check
    keys: frozenset[str]            # the task.yaml keys this kind reads (refused on other kinds)
    breakdown: Breakdown | None     # the report's per-label / per-field figure, if any

    def read_spec(self, raw: Mapping[str, Any], path: Path) -> dict[str, Any]:
        """Its task.yaml keys, validated, as keyword arguments of harness.task.Task (TaskError naming the key)."""
        ...

    def parse_target(self, settings: Mapping[str, Any], value: Any, where: Where) -> Any:
        """A gold answer of a data file, checked against `settings` (what read_spec returned)."""
        ...

    def example_meta(self, settings: Mapping[str, Any], record: Mapping[str, Any], where: Where) -> dict:
        """Metadata of an example the kind reads from its record (generation's declared facts), checked."""
        ...

    def answer_text(self, task: Any, target: Any) -> str:
        """How a gold answer is written as the assistant's answer (demonstrations, training targets)."""
        ...

    def constraint(self, task: Any, mode: str, insist: bool, field: str) -> Any:
        """The harness.lm.constrained.Constraint an answer can be held to in this decode mode, or None; `insist`
        (constrained: true) raises a ConfigError naming `field` when there is none."""
        ...

    def score(self, task: Any, examples: Sequence[Any], outputs: Sequence[str]) -> dict:
        """{"metrics", "per_example", "details"} for raw outputs aligned with examples."""
        ...

    def aggregate(self, records: Sequence[Mapping], labels: Sequence[str]) -> dict[str, float]:
        """Every metric of the kind from per-example records (point estimates and bootstrap resamples alike)."""
        ...

    def bootstrap(self, metric: str, records: Sequence[Mapping], idx: np.ndarray,
                  labels: Sequence[str]) -> np.ndarray:
        """One value of a ratio metric (not in mean_of) per row of the resample index matrix `idx`."""
        ...


# Every member a kind must have (checked by harness.kinds.register): the attributes and methods declared above.
MEMBERS = tuple(TaskKind.__annotations__) + tuple(n for n, v in vars(TaskKind).items()
                                                  if callable(v) and not n.startswith("_"))


def mean(records: Sequence[Mapping], key: str) -> float:
    return sum(r[key] for r in records) / len(records) if records else 0.0


def f1(tp: float, fp: float, fn: float) -> float:
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def no_meta(settings: Mapping[str, Any], record: Mapping[str, Any], where: Where) -> dict:
    """example_meta of a kind that reads nothing more from a record."""
    return {}


def no_ratio(metric: str, records: Sequence[Mapping], idx: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """bootstrap of a kind whose metrics are all means."""
    raise ValueError(f"no bootstrap rule for metric {metric!r}")

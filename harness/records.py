"""Typed records of a run: what one arm measured (`ArmResult`, with its `Usage` and `Training`) and the run's
comparison of its arms (`Comparison`), with their JSON form in comparison.json. Pure: no model code.

Every reader of comparison.json (decision, cost, verdict, tables, report, curve, compare, sweep, record) reads it
through `Comparison.from_json` / `ArmResult.from_json` and then reads fields, never keys. The JSON keeps the keys
older runs wrote (new ones are only added), and this is the only module that reads the folder naming of seed
replicates (`arm@seedN`) and that infers, for runs written before they were recorded, whether an arm was fine-tuned
(it recorded training) and whether it was served by an API (its backend). `Stat`, `Usage` and `Training` are
defined in harness.records_usage and imported from here.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from harness.records_usage import Stat, Training, Usage  # noqa: F401  (Stat too: read from here)

API_BACKENDS = frozenset({"openai-http"})  # backends that reach a model over an API (priced per token when listed)
_REPLICATE = re.compile(r"(?P<arm>.+)@seed(?P<seed>-?\d+)")


def replicate_name(arm: str, seed: int) -> str:
    """The name (and results folder) of one seed replicate of an arm: `arm@seedN`."""
    return f"{arm}@seed{seed}"


def _replicate_parts(name: str) -> tuple[str | None, int | None]:
    found = _REPLICATE.fullmatch(name)
    return (found["arm"], int(found["seed"])) if found else (None, None)


def served_by_api(model: Mapping[str, Any] | None) -> bool:
    """Whether a model description (`LM.describe()`) is that of a model reached over an API."""
    return bool(model) and model.get("backend") in API_BACKENDS


# comparison.json keys of an arm that are read into typed fields; any other key is kept in `other` as written
_ARM_KEYS = ("summary", "replicates", "metrics", "metrics_seed_std", "n", "prepare_s", "training", "usage", "model",
             "error", "fine_tuned", "served_by_api", "replicate_of", "seed")


@dataclass(frozen=True)
class ArmResult:
    """One arm's result, as comparison.json records it under "strategies": a measured arm (metrics, usage, training,
    model), a failed one (`error`), one seed replicate (`replicate_of`, `seed`) or the mean of an arm's replicates
    (`replicates`: the member names; `metrics_seed_std`: their spread)."""

    name: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    n: int | None = None
    summary: str = ""
    prepare_s: float | None = None
    training: Training | None = None
    usage: Usage | None = None
    model: Mapping[str, Any] | None = None
    error: str | None = None
    replicates: tuple[str, ...] = ()
    metrics_seed_std: Mapping[str, float] | None = None
    replicate_of: str | None = None
    seed: int | None = None
    fine_tuned: bool = False      # the arm's model was trained for the task (it pays training, labelling, upkeep)
    served_by_api: bool = False   # its model is reached over an API (priced per token when cost.api_prices lists it)
    other: Mapping[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def is_replicate(self) -> bool:
        """One seed of a replicated arm: its mean is the arm the decision compares."""
        return self.replicate_of is not None

    @property
    def is_mean(self) -> bool:
        return bool(self.replicates)

    @property
    def compared(self) -> bool:
        """Finished and not a single replicate: an arm the decision compares."""
        return not self.failed and not self.is_replicate

    @property
    def scored_here(self) -> bool:
        """Finished and scored example by example in its own folder (a plain arm or one replicate, not a mean)."""
        return not self.failed and not self.is_mean

    @classmethod
    def measured(cls, name: str, *, model: Mapping[str, Any], training: Training | None, **values: Any) -> ArmResult:
        """An arm's result as the runner builds it: fine-tuned when it recorded training, served by an API when
        its backend reaches one."""
        return cls(name=name, model=model, training=training, fine_tuned=training is not None,
                   served_by_api=served_by_api(model), **values)

    def replicate(self, of: str, seed: int) -> ArmResult:
        return replace(self, replicate_of=of, seed=seed)

    def to_json(self) -> dict:
        """The arm's entry in comparison.json (the keys older runs wrote, then the ones added since)."""
        head = {"replicates": list(self.replicates)} if self.replicates else {}
        if self.failed:
            out = {"error": self.error, **head}
        else:
            out = {"summary": self.summary, **head, "metrics": dict(self.metrics)}
            if self.metrics_seed_std is not None:
                out["metrics_seed_std"] = dict(self.metrics_seed_std)
            out["n"] = self.n
            if self.prepare_s is not None:
                out["prepare_s"] = self.prepare_s
            out.update({"training": self.training.to_json() if self.training else None,
                        "usage": self.usage.to_json() if self.usage else None, "model": self.model,
                        "fine_tuned": self.fine_tuned, "served_by_api": self.served_by_api})
        if self.is_replicate:
            out.update({"replicate_of": self.replicate_of, "seed": self.seed})
        return {**out, **self.other}

    @classmethod
    def from_json(cls, name: str, raw: Mapping) -> ArmResult:
        """Read an arm of comparison.json, also as older runs wrote it (replicates named `arm@seedN`, no
        `fine_tuned` or `served_by_api` recorded)."""
        of, seed = (raw["replicate_of"], raw.get("seed")) if raw.get("replicate_of") else _replicate_parts(name)
        training = Training.from_json(raw.get("training"))
        model = raw.get("model")
        return cls(name=name, metrics=dict(raw.get("metrics") or {}), n=raw.get("n"), summary=raw.get("summary", ""),
                   prepare_s=raw.get("prepare_s"), training=training,
                   usage=Usage.from_json(raw["usage"]) if raw.get("usage") else None, model=model,
                   error=raw.get("error"), replicates=tuple(raw.get("replicates") or ()),
                   metrics_seed_std=raw.get("metrics_seed_std"), replicate_of=of, seed=seed,
                   fine_tuned=bool(raw.get("fine_tuned", training is not None)),
                   served_by_api=bool(raw.get("served_by_api", served_by_api(model))),
                   other={k: v for k, v in raw.items() if k not in _ARM_KEYS})

    @classmethod
    def of(cls, arm: ArmResult | Mapping, name: str = "") -> ArmResult:
        """An ArmResult as it is, or read from its JSON form (callers that still hold dicts)."""
        return arm if isinstance(arm, ArmResult) else cls.from_json(name, arm)


def replicate_mean(name: str, members: Sequence[ArmResult]) -> ArmResult:
    """The mean of an arm's seed replicates, with their spread (sample standard deviation); a failure when every
    replicate failed."""
    done = [m for m in members if not m.failed]
    names = tuple(m.name for m in members)
    if not done:
        return ArmResult(name=name, error="every replicate failed", replicates=names)
    metrics = sorted(set.intersection(*(set(r.metrics) for r in done)))
    spread = {m: statistics.stdev([r.metrics[m] for r in done]) if len(done) > 1 else 0.0 for m in metrics}
    first = done[0]
    return ArmResult(name=name, summary=f"mean of {len(done)} seeds", replicates=names,
                     metrics={m: statistics.fmean(r.metrics[m] for r in done) for m in metrics},
                     metrics_seed_std=spread, n=first.n, usage=first.usage, model=first.model,
                     training=first.training, fine_tuned=first.fine_tuned, served_by_api=first.served_by_api)


# comparison.json top-level keys read into typed fields; others are kept as written
_COMPARISON_KEYS = ("task", "task_type", "primary_metric", "heldout_n", "run_dir", "model", "labels", "fields",
                    "judge", "strategies", "decision")


@dataclass
class Comparison:
    """A run's comparison.json: the task, every arm's result (JSON key "strategies") and, once made, the decision
    (kept as the JSON that harness.decision.decide writes)."""

    task: str
    task_type: str
    primary_metric: str
    arms: dict[str, ArmResult]
    heldout_n: int | None = None
    run_dir: str | None = None
    model: Mapping[str, Any] | None = None
    labels: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    judge: Mapping[str, Any] | None = None
    decision: Mapping[str, Any] | None = None
    other: Mapping[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> Mapping[str, Any]:
        return (self.decision or {}).get("verdict") or {}

    @property
    def compared(self) -> list[str]:
        """The arms the decision compares: finished, and a replicated arm by its mean."""
        return [a for a, r in self.arms.items() if r.compared]

    def to_json(self) -> dict:
        out = {"task": self.task, "task_type": self.task_type, "primary_metric": self.primary_metric,
               "heldout_n": self.heldout_n, "run_dir": self.run_dir, "model": self.model, "labels": list(self.labels),
               "fields": list(self.fields), **({"judge": self.judge} if self.judge else {}),
               "strategies": {a: r.to_json() for a, r in self.arms.items()}}
        if self.decision is not None:
            out["decision"] = self.decision
        return {**out, **self.other}

    @classmethod
    def from_json(cls, raw: Mapping) -> Comparison:
        return cls(task=raw.get("task", ""), task_type=raw.get("task_type", ""), primary_metric=raw["primary_metric"],
                   arms={a: ArmResult.from_json(a, r) for a, r in (raw.get("strategies") or {}).items()},
                   heldout_n=raw.get("heldout_n"), run_dir=raw.get("run_dir"), model=raw.get("model"),
                   labels=list(raw.get("labels") or []), fields=list(raw.get("fields") or []),
                   judge=raw.get("judge"), decision=raw.get("decision"),
                   other={k: v for k, v in raw.items() if k not in _COMPARISON_KEYS})

    @classmethod
    def of(cls, comparison: Comparison | Mapping) -> Comparison:
        return comparison if isinstance(comparison, Comparison) else cls.from_json(comparison)



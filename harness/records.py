"""Typed records of a run: what one arm measured (`ArmResult`, with its `Usage` and `Training`) and the run's
comparison of its arms (`Comparison`), with their JSON form in comparison.json. Pure: no model code.

Every reader of comparison.json (decision, cost, verdict, tables, report, curve, compare, sweep, record) reads it
through `Comparison.from_json` / `ArmResult.from_json` and then reads fields, never keys. The JSON keeps the keys
older runs wrote (new ones are only added), and this is the only module that reads the folder naming of seed
replicates (`arm@seedN`) and that infers, for runs written before they were recorded, whether an arm was fine-tuned
(it recorded training) and whether it was served by an API (its backend).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

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


@dataclass(frozen=True)
class Stat:
    """A per-request quantity over an arm's held-out examples: total, mean, median and 95th percentile."""

    total: float = 0
    mean: float | None = None
    p50: float | None = None
    p95: float | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if not values:
            return cls()
        ordered = sorted(values)
        return cls(total=sum(values), mean=statistics.fmean(values), p50=statistics.median(values),
                   p95=ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))])

    def to_json(self) -> dict:
        return {"total": self.total, "mean": self.mean, "p50": self.p50, "p95": self.p95}

    @classmethod
    def from_json(cls, raw: Mapping | None) -> Stat:
        raw = raw or {}
        return cls(total=raw.get("total", 0), mean=raw.get("mean"), p50=raw.get("p50"), p95=raw.get("p95"))


@dataclass(frozen=True)
class Usage:
    """What serving an arm's held-out examples used (usage.json): tokens, latency, truncated and failed requests,
    throughput, and the backend's own counters (requests, retries, cache hits) when it keeps them."""

    n: int = 0
    input_tokens: Stat = field(default_factory=Stat)
    output_tokens: Stat = field(default_factory=Stat)
    latency_s: Stat = field(default_factory=Stat)
    truncated: int = 0
    failed: int = 0
    examples_per_s: float | None = None
    grammar_s: Stat | None = None          # constrained decoding only: time spent in the grammar's token masks
    grammar_unfinished: int | None = None  # constrained decoding only: answers cut before the grammar was satisfied
    backend: Mapping[str, Any] | None = None

    @classmethod
    def of_predictions(cls, records: Sequence[Mapping]) -> Usage:
        """Summarise prediction records (each with a `usage` entry, as predictions.jsonl holds them)."""
        def values(key: str) -> list[float]:
            return [float(r["usage"].get(key, 0) or 0) for r in records]
        latency = Stat.of(values("latency_s"))
        constrained = any("constrained" in r["usage"] for r in records)
        return cls(n=len(records), input_tokens=Stat.of(values("input_tokens")),
                   output_tokens=Stat.of(values("output_tokens")), latency_s=latency,
                   truncated=sum(1 for r in records if r["usage"].get("truncated")),
                   failed=sum(1 for r in records if r["usage"].get("failed")),
                   examples_per_s=len(records) / latency.total if latency.total else None,
                   grammar_s=Stat.of(values("grammar_s")) if constrained else None,
                   grammar_unfinished=sum(1 for r in records if r["usage"].get("grammar_unfinished"))
                   if constrained else None)

    def to_json(self) -> dict:
        out = {"n": self.n, "input_tokens": self.input_tokens.to_json(), "output_tokens": self.output_tokens.to_json(),
               "latency_s": self.latency_s.to_json(), "truncated": self.truncated, "failed": self.failed,
               "examples_per_s": self.examples_per_s}
        if self.grammar_s is not None:
            out.update({"grammar_s": self.grammar_s.to_json(), "grammar_unfinished": self.grammar_unfinished})
        return {**out, "backend": dict(self.backend)} if self.backend is not None else out

    @classmethod
    def from_json(cls, raw: Mapping | None) -> Usage:
        raw = raw or {}
        return cls(n=int(raw.get("n") or 0), input_tokens=Stat.from_json(raw.get("input_tokens")),
                   output_tokens=Stat.from_json(raw.get("output_tokens")),
                   latency_s=Stat.from_json(raw.get("latency_s")), truncated=int(raw.get("truncated") or 0),
                   failed=int(raw.get("failed") or 0), examples_per_s=raw.get("examples_per_s"),
                   grammar_s=Stat.from_json(raw["grammar_s"]) if raw.get("grammar_s") else None,
                   grammar_unfinished=raw.get("grammar_unfinished"), backend=raw.get("backend"))


@dataclass(frozen=True)
class Training:
    """The measured cost of training an arm (also when this run reused the cached adapter): the fields the cost
    model and the tables read, and every other recorded field (tokens seen, device, history, …) as recorded."""

    wall_s: float | None = None
    train_examples: int | None = None
    dev_examples: int | None = None
    peak_memory_mb: float | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    stop_reason: str | None = None        # why training stopped (recorded since epochs are chosen on dev)
    optimizer_steps: int | None = None
    history: Sequence[Mapping] | None = None
    cached: bool = False
    other: Mapping[str, Any] = field(default_factory=dict)

    _TYPED = ("wall_s", "train_examples", "dev_examples", "peak_memory_mb", "best_epoch", "epochs_run", "stop_reason",
              "optimizer_steps", "history", "cached")
    _ALWAYS = ("wall_s", "train_examples", "dev_examples", "peak_memory_mb", "best_epoch", "history")  # also as null

    @property
    def labelled_examples(self) -> int:
        """Training and dev examples: what had to be labelled for this arm."""
        return (self.train_examples or 0) + (self.dev_examples or 0)

    def to_json(self) -> dict:
        """The typed fields (those added since the first runs only when set), the others as recorded, `cached`."""
        typed = {k: getattr(self, k) for k in self._TYPED
                 if k != "cached" and (getattr(self, k) is not None or k in self._ALWAYS)}
        return {**typed, **self.other, "cached": self.cached}

    # what a strategy's prepare report (`report["training"]`) contributes to the arm's result
    REPORTED = ("wall_s", "tokens_seen", "tokens_per_s", "peak_memory_mb", "peak_memory_kind", "device", "autocast",
                "trainable_parameters", "train_examples", "dev_examples", "best_epoch", "epochs_run", "stop_reason",
                "optimizer_steps", "method", "history")

    @classmethod
    def from_report(cls, training: Mapping | None, cached: bool) -> Training | None:
        """The measured cost of training from a prepare report, also when the run reused the cached artefact."""
        if not training:
            return None
        return cls.from_json({**{k: training.get(k) for k in cls.REPORTED}, "cached": cached})

    @classmethod
    def from_json(cls, raw: Mapping | None) -> Training | None:
        if not raw:  # written as null (or {}) for an arm that did not train
            return None
        return cls(**{k: raw.get(k) for k in cls._TYPED if k != "cached"}, cached=bool(raw.get("cached", False)),
                   other={k: v for k, v in raw.items() if k not in cls._TYPED})


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



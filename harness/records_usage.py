"""What serving and training an arm used, as comparison.json and usage.json record it: `Stat` (a per-request
quantity), `Usage` (tokens, latency, failures, throughput, backend counters) and `Training` (the measured cost of
training). Import them from harness.records, with the arm's result they belong to. Pure: no model code."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence


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
                "optimizer_steps", "method", "history", "warnings")

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

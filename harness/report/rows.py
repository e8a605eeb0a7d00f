"""The rows of a run's comparison table, built once from the typed records and the recorded decision: the terminal
table (harness.report.display) and the report (harness.report.render) format the same rows, each in its own width. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from harness.records import ArmResult, Comparison
from harness.decision.verdict import model_label, money


@dataclass(frozen=True)
class Row:
    """One arm: its recorded result and what the decision says about it (interval, costs, relation, choice)."""

    arm: str
    result: ArmResult
    model_label: str = ""                     # `backend: model`; shown only when arms ran on different models
    chosen: bool = False
    ci: tuple[float, float] | None = None     # the primary metric's bootstrap interval
    cost: Mapping[str, Any] = field(default_factory=dict)  # the decision's costs of this arm ({} when not priced)
    relation: str = ""                        # how it stands against the best arm

    @property
    def error(self) -> str | None:
        return self.result.error

    def primary(self, metric: str) -> float | None:
        return self.result.metrics.get(metric)

    def seed_spread(self, metric: str) -> float | None:
        """The standard deviation between seeds of a replicated arm's metric (None when not replicated)."""
        return (self.result.metrics_seed_std or {}).get(metric)

    def ci_text(self) -> str | None:
        return f"[{self.ci[0]:.3f}, {self.ci[1]:.3f}]" if self.ci else None

    def per_correct(self, currency: str) -> str:
        """Cost per 1k correct answers at the configured volume, or a dash."""
        value = self.cost.get("cost_per_correct")
        return money(1000 * value, currency) if value else "–"

    def train_s(self, cached: str) -> str:
        """Measured training seconds, with `cached` appended when this run reused the adapter; a dash if none."""
        t = self.result.training
        if not t:
            return "–"
        return f"{t.wall_s:.0f}" + (cached if t.cached else "")


@dataclass(frozen=True)
class Rows:
    primary: str
    currency: str
    mixed_models: bool       # arms ran on different models: each row names its model
    metrics: list[str]       # every other metric an arm recorded, sorted
    rows: list[Row]


def arm_rows(comparison: Comparison | Mapping) -> Rows:
    """One row per arm of comparison.json, in its order (failed arms and seed replicates included)."""
    comparison = Comparison.of(comparison)
    decision = comparison.decision or {}
    primary, intervals = comparison.primary_metric, decision.get("intervals") or {}
    costs = decision.get("costs") or {}
    priced, relations = costs.get("arms") or {}, decision.get("against_best") or {}
    choice = (decision.get("verdict") or {}).get("choice")
    labels = {a: model_label(r.model) for a, r in comparison.arms.items() if not r.failed}
    rows = []
    for arm, result in comparison.arms.items():
        ci = ((intervals.get(arm) or {}).get(primary) or {}).get("ci")
        rows.append(Row(arm=arm, result=result, model_label=labels.get(arm, ""), chosen=arm == choice,
                        ci=tuple(ci) if ci else None, cost=priced.get(arm) or {},
                        relation=(relations.get(arm) or {}).get("relation", "")))
    metrics = sorted({m for r in comparison.arms.values() for m in r.metrics} - {primary})
    return Rows(primary=primary, currency=costs.get("currency", "USD"), mixed_models=len(set(labels.values())) > 1,
                metrics=metrics, rows=rows)

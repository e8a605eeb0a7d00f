"""The decision: a pure function of recorded results, the cost model and the decision settings.

decide(evidence, cost, settings) → intervals for every metric of every arm, Holm-corrected paired tests on the
primary metric, each arm against the best (non-inferiority and equivalence within ±margin), the held-out set's
detectable difference, costs (wrong answers priced when error costs are set) and break-even, the forgetting check,
the decision map and the verdict. The rule is `harness.decision.choice` (README, "How the verdict is reached").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Mapping, Sequence

import numpy as np

from harness.decision import choice as rule
from harness.decision import cost as costs
from harness.decision import stats
from harness.decision import uncertainty
from harness.records import ArmResult
from harness.decision.verdict import find_pair, write_verdict


@dataclass(frozen=True)
class Settings:
    alpha: float = 0.05
    margin: float = 0.03              # the smallest difference on the primary metric the team cares about
    max_failure_rate: float = 0.05    # an arm failing on more of its requests is reported but never chosen
    power: float = 0.8
    resamples: int = 2000
    confidence: float = 0.95
    few_train_examples: int = 100
    forgetting_drop: float = 0.05
    seed: int = 0


@dataclass
class Evidence:
    """What a run recorded, read from its folder (harness.rundata) or built by hand in tests."""

    task_type: str
    primary: str
    labels: Sequence[str]
    arms: Mapping[str, ArmResult]                     # comparison.json "strategies": arm name → recorded result
    records: Mapping[str, Sequence[Mapping]]          # arm (or replicate) name → per-example records, held-out order
    data_checks: Mapping[str, Any] = field(default_factory=dict)
    control: Mapping[str, Any] = field(default_factory=dict)   # {"name", "base": [0/1…], "arms": {arm: [0/1…]}}

    def __post_init__(self) -> None:  # arms given as comparison.json dicts are read into ArmResults
        self.arms = {name: ArmResult.of(arm, name) for name, arm in self.arms.items()}

    def members(self, arm: str) -> tuple[str, ...]:
        """The arms whose per-example records an arm's samples average: its replicates, or itself."""
        return self.arms[arm].replicates or (arm,)


def _arm_samples(ev: Evidence, arm: str, idx: np.ndarray) -> dict[str, np.ndarray]:
    runs = [uncertainty.metric_samples(ev.task_type, ev.records[m], idx, ev.labels) for m in ev.members(arm)
            if m in ev.records]
    return {k: np.mean([r[k] for r in runs], axis=0) for k in runs[0]}


def _primary_values(ev: Evidence, arm: str) -> np.ndarray | None:
    members = [m for m in ev.members(arm) if m in ev.records]
    values = [uncertainty.per_example_values(ev.records[m], ev.primary) for m in members]
    return None if values[0] is None else np.mean(values, axis=0)


def intervals(ev: Evidence, samples: Mapping[str, Mapping[str, np.ndarray]], s: Settings) -> dict:
    return {arm: {m: {"value": ev.arms[arm].metrics.get(m), "ci": list(stats.percentile_interval(v, s.confidence))}
                  for m, v in by_metric.items()} for arm, by_metric in samples.items()}


def paired_tests(ev: Evidence, samples: Mapping[str, Mapping[str, np.ndarray]], s: Settings) -> list[dict]:
    """Every pair of arms on the primary metric (`stats.paired_test`: exact McNemar when both arms score 0/1 per
    example, a paired bootstrap otherwise); p-values Holm-corrected across all pairs."""
    values = {a: _primary_values(ev, a) for a in samples}
    tests = []
    for a, b in combinations(samples, 2):
        diff = ev.arms[a].metrics[ev.primary] - ev.arms[b].metrics[ev.primary]
        test = stats.paired_test(samples[a][ev.primary], samples[b][ev.primary], values[a], values[b], diff,
                                 s.confidence)
        tests.append({"a": a, "b": b, "difference": diff, **test,
                      "detectable_difference": stats.detectable_difference(test["se"], s.alpha, s.power)})
    for t, p in zip(tests, stats.holm([t["p_value"] for t in tests])):
        t["p_holm"] = p
        t["significant"] = p < s.alpha
    return tests


def forgetting(ev: Evidence, s: Settings) -> dict | None:
    control = ev.control
    if not control or not control.get("arms"):
        return None
    base = np.asarray(control["base"], dtype=float)
    idx = stats.bootstrap_indices(len(base), s.resamples, s.seed + 1)
    out = {"control_set": control.get("name"), "n": len(base), "base_accuracy": float(base.mean()), "arms": {}}
    for arm, values in control["arms"].items():
        values = np.asarray(values, dtype=float)
        change = float(values.mean() - base.mean())
        boot = stats.paired_bootstrap(values[idx].mean(axis=1), base[idx].mean(axis=1), change, s.confidence)
        out["arms"][arm] = {"accuracy": float(values.mean()), "change": change, "ci": boot["ci"],
                            **stats.mcnemar_exact(values.astype(int), base.astype(int))}
    return out


def _nothing(summary: str, **extra) -> dict:
    return {"verdict": {"choice": None, "fine_tuning_justified": None, "status": "no_choice", "summary": summary,
                        "reasons": [], "caveats": []}, **extra}


def against_best(ev: Evidence, samples: Mapping, tests: Sequence[Mapping], names: Sequence[str], best: str, n: int,
                 s: Settings) -> dict[str, dict]:
    """Every other arm against the best on the primary metric (`harness.decision.choice.relation`), with its Holm p."""
    out = {}
    for a in names:
        if a == best:
            continue
        t = find_pair(tests, best, a)
        diffs = samples[a][ev.primary] - samples[best][ev.primary]
        observed = ev.arms[a].metrics[ev.primary] - ev.arms[best].metrics[ev.primary]
        out[a] = {"against": best, **rule.relation(diffs, observed, t["significant"], n, s.margin, s.alpha),
                  "p_holm": t["p_holm"], "significant": t["significant"]}
    return out


def _power(tests: Sequence[Mapping], best: str | None, n: int, s: Settings) -> dict:
    detectable = [t["detectable_difference"] for t in tests if best in (t["a"], t["b"])]
    return {"n": n, "alpha": s.alpha, "power": s.power,
            "detectable_difference": float(np.median(detectable)) if detectable else
            stats.worst_case_detectable(n, s.alpha, s.power),
            "worst_case": stats.worst_case_detectable(n, s.alpha, s.power)}


def _costs(cfg: costs.CostConfig, priced: Mapping, reference: Mapping | None, odds: Mapping | None) -> dict:
    return {"currency": cfg.currency, "volume_per_month": cfg.volume_per_month, "horizon_months": cfg.horizon_months,
            "hardware": cfg.hardware, "error_cost": cfg.error_cost, "review_cost": cfg.review_cost,
            "prices_are_examples": cfg.example, "arms": priced, "reference_api": reference,
            **({"p_cheapest": odds["p_cheapest"], "expected_regret": odds["expected_regret"]} if odds else {})}


def decide(ev: Evidence, cost_cfg: costs.CostConfig, s: Settings) -> dict:
    names = [a for a, r in ev.arms.items() if r.compared]
    if not names:
        return _nothing("No arm finished, so there is nothing to decide.")
    n = len(ev.records[ev.members(names[0])[0]])
    idx = stats.bootstrap_indices(n, s.resamples, s.seed)
    samples = {a: _arm_samples(ev, a, idx) for a in names}  # shared by the intervals and the paired tests
    ci = intervals(ev, samples, s)
    tests = paired_tests(ev, samples, s) if len(names) > 1 else []
    priced = {a: costs.arm_cost(ev.arms[a], cost_cfg, ev.primary) for a in names}
    score = {a: ev.arms[a].metrics[ev.primary] for a in names}
    failures = {a: rule.failure(ev.arms[a]) for a in names}
    for f in failures.values():
        f["broken"] = f["rate"] > s.max_failure_rate
    selectable = [a for a in names if not failures[a]["broken"]]
    totals = {a: priced[a]["monthly_total"] for a in names}
    reference = None
    if cost_cfg.reference_api and cost_cfg.reference_api["prompts_of"] in ev.arms:
        reference = costs.reference_api_cost(ev.arms[cost_cfg.reference_api["prompts_of"]], cost_cfg)
    forgot = forgetting(ev, s)
    recorded = {"settings": s.__dict__, "intervals": ci, "paired_tests": tests, "failures": failures,
                "forgetting": forgot}
    if not selectable:
        rates = ", ".join(f"{a} {failures[a]['rate']:.0%}" for a in names)
        return {**recorded, "power": _power(tests, None, n, s), "best": None, "eligible": [], "against_best": {},
                "costs": _costs(cost_cfg, priced, reference, None), "break_even": {}, "decision_map": None,
                **_nothing(f"No arm can be chosen: every arm failed on more than {s.max_failure_rate:.0%} of its "
                           f"held-out examples ({rates}; failed requests, invalid labels or JSON).")}
    best = max(selectable, key=lambda a: (score[a], -(totals[a] if totals[a] is not None else float("inf"))))
    relations = against_best(ev, samples, tests, names, best, n, s)
    choice, eligible, still_open = rule.choose(selectable, best, relations, totals, score)
    odds = (rule.cheapest_odds(rule.resampled_totals(ev.arms, {a: samples[a] for a in selectable},
                                                     {a: priced[a] for a in selectable}, ev.primary, cost_cfg), choice)
            if cost_cfg.prices_errors else None)
    tuned = [a for a in names if ev.arms[a].fine_tuned]
    plain = [a for a in selectable if not ev.arms[a].fine_tuned]
    best_plain = max(plain, key=lambda a: score[a]) if plain else None
    breakeven = {a: {"against": best_plain, **costs.break_even(priced[a], priced[best_plain], cost_cfg.horizon_months)}
                 for a in tuned} if best_plain else {}
    power = _power(tests, best, n, s)
    verdict = write_verdict(ev=ev, s=s, cost_cfg=cost_cfg, names=names, score=score, ci=ci, tests=tests,
                            priced=priced, best=best, eligible=eligible, choice=choice, tuned=tuned,
                            best_plain=best_plain, breakeven=breakeven, power=power, forgetting=forgot,
                            reference=reference, relations=relations, still_open=still_open, failures=failures,
                            selectable=selectable, odds=odds)
    return {**recorded, "power": power, "best": best, "eligible": eligible, "against_best": relations,
            "costs": _costs(cost_cfg, priced, reference, odds), "break_even": breakeven,
            "decision_map": rule.decision_map(ev.arms, selectable, best, relations, score, ev.primary, cost_cfg),
            "verdict": verdict}

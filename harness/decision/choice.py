"""The choice rule, pure: how each arm stands against the best (better, worse, equivalent within ±margin,
non-inferior, not separable), which arms may be chosen, the cheapest of them in total, the comparisons that leave
the choice open, the probability of each arm being cheapest in total when wrong answers are priced, and the
decision map (the choice across monthly volume and error cost).

The rule (README, "How the verdict is reached"): the best arm on the primary metric qualifies; another arm qualifies
only when the paired one-sided lower bound of (arm − best) lies above −margin (non-inferior). Arms whose failures
exceed `max_failure_rate` never qualify. The choice is the qualifying arm with the lowest monthly total (serving,
upkeep, one-off spread and, when priced, expected wrong answers). The verdict is *undecided* when a cheaper arm is
neither shown non-inferior nor shown worse (Holm-corrected): the comparison that would settle it is open.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from harness.decision import cost as costs
from harness.decision import stats
from harness.records import ArmResult

QUALIFY = ("better", "equivalent", "non_inferior")


def relation(diffs: np.ndarray, observed: float, significant: bool, n: int, margin: float, alpha: float) -> dict:
    """How an arm stands against the best from the paired bootstrap samples of (arm − best): one-sided (1 − alpha)
    bounds, the relation, and for an open comparison the held-out examples that would settle it."""
    lower, upper = stats.one_sided_bounds(diffs, alpha)
    if significant and observed > 0:
        rel = "better"
    elif lower > -margin and upper < margin:
        rel = "equivalent"
    elif lower > -margin:
        rel = "non_inferior"
    elif significant:
        rel = "worse"
    else:
        rel = "not_separable"
    se = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0
    needed, how = stats.examples_needed(observed, se, n, margin, alpha) if rel == "not_separable" else (None, None)
    return {"difference": observed, "lower": lower, "upper": upper, "se": se, "relation": rel,
            "qualifies": rel in QUALIFY, "n_needed": needed, "settle_by": how}


def failure(arm: ArmResult | Mapping) -> dict:
    """The share of an arm's held-out examples that failed: failed requests, unparseable labels, invalid JSON (the
    largest of these rates), and whether every request failed."""
    arm = ArmResult.of(arm)
    metrics = arm.metrics
    n = arm.n or (arm.usage.n if arm.usage else 0)
    failed = arm.usage.failed if arm.usage else 0
    rates = {"failed_requests": failed / n if n else 0.0, "invalid_output": float(metrics.get("invalid_rate") or 0.0),
             "invalid_json": 1 - float(metrics["valid_json_rate"]) if "valid_json_rate" in metrics else 0.0}
    worst = max(rates, key=rates.get)
    return {"rate": rates[worst], "kind": worst, "rates": rates, "failed_requests": failed,
            "wholesale": bool(n) and failed >= n}


def choose(selectable: Sequence[str], best: str, relations: Mapping[str, Mapping], totals: Mapping[str, float | None],
           score: Mapping[str, float]) -> tuple[str, list[str], list[str]]:
    """(choice, eligible, open): the cheapest qualifying arm in total (ties: the higher score), and the cheaper arms
    whose comparison with the best is not separable, cheapest first."""
    def total(a: str) -> float:
        return totals[a] if totals[a] is not None else float("inf")

    eligible = [a for a in selectable if a == best or relations[a]["qualifies"]]
    choice = min(eligible, key=lambda a: (total(a), -score[a]))
    still_open = sorted((a for a in selectable if a not in eligible and relations[a]["relation"] == "not_separable"
                         and total(a) < total(choice)), key=total)
    return choice, eligible, still_open


def resampled_totals(arms: Mapping[str, ArmResult], samples: Mapping[str, Mapping[str, np.ndarray]],
                     priced: Mapping[str, Mapping], primary: str, cfg: costs.CostConfig) -> dict[str, np.ndarray]:
    """Each arm's monthly total on every bootstrap resample, its wrong-answer cost from the resampled scores."""
    out = {}
    for a, p in priced.items():
        if p["monthly_total"] is None:
            continue
        fixed = p["monthly_total"] - cfg.volume_per_month / 1000 * p["error_cost_per_1k_requests"]
        errors = cfg.error_cost * (1 - samples[a][primary]) if cfg.error_cost else 0.0
        if cfg.review_cost and "rules_pass" in samples[a]:
            errors = errors + cfg.review_cost * (1 - samples[a]["rules_pass"])
        out[a] = fixed + cfg.volume_per_month * np.asarray(errors) * np.ones(len(samples[a][primary]))
    return out


def cheapest_odds(totals: Mapping[str, np.ndarray], choice: str) -> dict:
    """P(each arm is the cheapest in total) over the paired resamples, and the expected regret of `choice` (its
    expected excess over the cheapest arm of each resample)."""
    if choice not in totals:
        return {"p_cheapest": {}, "expected_regret": None}
    names = list(totals)
    matrix = np.vstack([totals[a] for a in names])
    winner = matrix.argmin(axis=0)
    return {"p_cheapest": {a: float((winner == i).mean()) for i, a in enumerate(names)},
            "expected_regret": float((totals[choice] - matrix.min(axis=0)).mean())}


def decision_map(arms: Mapping[str, ArmResult], selectable: Sequence[str], best: str, relations: Mapping[str, Mapping],
                 score: Mapping[str, float], primary: str, cfg: costs.CostConfig, points: int = 36) -> dict:
    """The choice on a grid of monthly volume (10³–10⁸, log) × error cost per wrong answer (0, then log-spaced
    from a thousandth of the maximum to the maximum: twice the configured cost, at least 1 currency unit): which
    arm, and whether the verdict is open."""
    volumes = np.logspace(3, 8, points).tolist()
    top = max(1.0, 2 * cfg.error_cost)
    error_costs = [0.0, *np.geomspace(top / 1000, top, points // 2).tolist()]
    choice, undecided = [], []
    for e in error_costs:
        row, open_row = [], []
        for v in volumes:
            at = dataclasses.replace(cfg, volume_per_month=v, error_cost=e)
            totals = {a: costs.arm_cost(arms[a], at, primary)["monthly_total"] for a in selectable}
            pick, _, still_open = choose(selectable, best, relations, totals, score)
            row.append(pick)
            open_row.append(bool(still_open))
        choice.append(row)
        undecided.append(open_row)
    return {"volumes": volumes, "error_costs": error_costs, "choice": choice, "undecided": undecided,
            "current": {"volume": cfg.volume_per_month, "error_cost": cfg.error_cost}, "currency": cfg.currency}

"""Statistics for comparing arms on the same held-out ids: bootstrap intervals, paired tests, Holm correction and
the smallest difference a held-out set can detect. Pure numpy/scipy: numbers in, numbers out.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats as sps

DEFAULT_RESAMPLES = 2000


def bootstrap_indices(n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """A (resamples × n) matrix of example indices drawn with replacement; share it between arms to pair them."""
    if n < 1:
        raise ValueError("cannot bootstrap an empty set")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean_ci(values: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                      confidence: float = 0.95) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    idx = bootstrap_indices(len(values), resamples, seed)
    return percentile_interval(values[idx].mean(axis=1), confidence)


def mcnemar_exact(a: Sequence[int], b: Sequence[int]) -> dict:
    """Exact McNemar test for paired binary outcomes (1 = correct): a binomial test on the discordant pairs.
    `a_only` counts examples A got right and B wrong; `b_only` the reverse."""
    a, b = np.asarray(a, dtype=int), np.asarray(b, dtype=int)
    if a.shape != b.shape:
        raise ValueError("McNemar needs the same examples for both arms")
    a_only, b_only = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    discordant = a_only + b_only
    p = 1.0 if discordant == 0 else float(sps.binomtest(min(a_only, b_only), discordant, 0.5).pvalue)
    return {"test": "mcnemar_exact", "a_only": a_only, "b_only": b_only, "p_value": min(1.0, p)}


def paired_bootstrap(stat_a: np.ndarray, stat_b: np.ndarray, observed: float, confidence: float = 0.95) -> dict:
    """Paired bootstrap of a difference A − B: `stat_a`/`stat_b` are the metric of each arm on the same resampled
    index sets. Two-sided p-value from the resampled differences re-centred on zero (null of no difference)."""
    diffs = np.asarray(stat_a, dtype=float) - np.asarray(stat_b, dtype=float)
    extreme = np.abs(diffs - diffs.mean()) >= abs(observed) - 1e-12
    p = (1 + int(extreme.sum())) / (len(diffs) + 1)
    low, high = percentile_interval(diffs, confidence)
    return {"test": "paired_bootstrap", "p_value": min(1.0, p), "ci": [low, high], "se": float(diffs.std(ddof=1))}


def paired_test(samples_a: np.ndarray, samples_b: np.ndarray, values_a: np.ndarray | None,
                values_b: np.ndarray | None, observed: float, confidence: float = 0.95) -> dict:
    """A − B on the same examples: interval and SE from the paired bootstrap (`samples_*`, the metric on shared
    resamples); the p-value from the exact McNemar test when both arms score 0/1 per example (`values_*`), from the
    bootstrap otherwise (values None: a metric that is not a mean of per-example scores)."""
    boot = paired_bootstrap(samples_a, samples_b, observed, confidence)
    if values_a is not None and values_b is not None and \
            set(np.unique(values_a)) | set(np.unique(values_b)) <= {0.0, 1.0}:
        return {**boot, **mcnemar_exact(values_a, values_b)}
    return boot


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adjusted[i] = min(1.0, running)
    return adjusted.tolist()


def detectable_difference(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference a two-sided test at `alpha` finds with probability `power`, given the standard
    error of the paired difference: (z_{1-α/2} + z_{power}) · SE."""
    return float((sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)) * se)


def worst_case_detectable(n: int, alpha: float = 0.05, power: float = 0.8, discordance: float = 0.5) -> float:
    """Detectable difference in accuracy between two arms on n paired examples when they disagree on
    `discordance` of them (0.5 is pessimistic; SE ≈ sqrt(discordance / n))."""
    return detectable_difference(float(np.sqrt(discordance / n)), alpha, power) if n else float("inf")



def one_sided_bounds(diffs: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """The one-sided (1 − alpha) lower and upper bounds of a difference from its paired bootstrap samples (together
    the (1 − 2·alpha) interval that two one-sided tests, TOST, compare with ±margin)."""
    low, high = np.percentile(np.asarray(diffs, dtype=float), [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


def examples_needed(observed: float, se: float, n: int, margin: float,
                    alpha: float = 0.05) -> tuple[int | None, str | None]:
    """Held-out examples that would settle an open comparison A − best at the observed difference and paired
    variance (SE shrinking as 1/√n): non-inferiority when observed > −margin (n such that
    observed − z₁₋α·SE_n > −margin), otherwise superiority of the best (observed + z₁₋α/₂·SE_n < 0).
    (None, None) when neither can be settled (no difference at all beyond the margin)."""
    if observed + margin > 0:
        z, gap, how = sps.norm.ppf(1 - alpha), observed + margin, "non_inferiority"
    elif observed < 0:
        z, gap, how = sps.norm.ppf(1 - alpha / 2), -observed, "superiority"
    else:
        return None, None
    needed = int(np.ceil(n * (z * se / gap) ** 2))
    return max(needed, n + 1), how

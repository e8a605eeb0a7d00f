"""The verdict rule on hand-built per-example records: non-inferiority within the margin, "undecided" with the
held-out size that would settle it, superiority, equivalence, error costs, broken arms, runs with nothing to compare
with, and stability under the seeded bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness import scoring
from harness.decision import choice
from harness.decision import cost
from harness.decision import decide
from harness.decision import stats

LABELS = ["a", "b"]
COST = {"example": False, "currency": "USD", "volume_per_month": 100_000, "horizon_months": 12,
        "self_hosted": {"price_per_hour": 3.6},
        "fine_tuning": {"retrain_every_months": 3, "upkeep_per_month": 100.0, "labelling_cost_per_example": 0.0}}
CFG = cost.load_cost_config(COST)
TRAINING = {"wall_s": 600.0, "train_examples": 400, "dev_examples": 50}
FAST = decide.Settings(resamples=1000)


def _usage(examples_per_s: float, n: int, failed: int = 0) -> dict:
    return {"n": n, "examples_per_s": examples_per_s, "input_tokens": {"mean": 100.0},
            "output_tokens": {"mean": 1.0}, "latency_s": {"mean": 1 / examples_per_s}, "truncated": 0,
            "failed": failed}


def _records(correct, invalid=()) -> list[dict]:
    bad = set(invalid)
    return [{"correct": 0 if i in bad else c, "invalid": int(i in bad), "gold": "a",
             "parsed": None if i in bad else ("a" if c else "b")} for i, c in enumerate(correct)]


def _evidence(arms: dict) -> decide.Evidence:
    """arms: name -> (correct 0/1 list, examples/s, training or None[, invalid indices[, failed requests]])."""
    results, records = {}, {}
    for name, (correct, speed, training, *rest) in arms.items():
        invalid = rest[0] if rest else ()
        records[name] = _records(correct, invalid)
        results[name] = {"metrics": scoring.aggregate("classification", records[name], LABELS),
                         "usage": _usage(speed, len(correct), rest[1] if len(rest) > 1 else 0),
                         "training": training, "prepare_s": 0.0, "n": len(correct)}
    return decide.Evidence(task_type="classification", primary="accuracy", labels=LABELS, arms=results,
                           records=records)


def _pair(n: int, both: int, best_only: int, other_only: int) -> tuple[list[int], list[int]]:
    """Paired 0/1 outcomes on n examples: both right on `both`, only the best right on `best_only`, only the other
    right on `other_only`, both wrong on the rest."""
    best = [1] * both + [1] * best_only + [0] * other_only
    other = [1] * both + [0] * best_only + [1] * other_only
    rest = n - len(best)
    return best + [0] * rest, other + [0] * rest


def test_a_tied_cheap_arm_with_a_wide_interval_is_undecided_and_ten_times_the_examples_decide_it():
    # rag (slow: dear per request) and few (fast: cheap) disagree on 41 of 200 examples: few 0.005 behind
    rag, few = _pair(200, 130, 21, 20)
    d = decide.decide(_evidence({"rag": (rag, 2, None), "few": (few, 20, None)}), CFG, FAST)
    v, r = d["verdict"], d["against_best"]["few"]
    assert r["relation"] == "not_separable" and r["lower"] < -0.03
    assert v["status"] == "undecided" and v["summary"].startswith("Undecided")
    assert v["open"]["arm"] == "few" and v["open"]["settle_by"] == "non_inferiority"
    # independent of the code's formula: the normal approximation of a paired difference of two 0/1 arms with 41
    # discordant examples out of 200 has SE = sqrt((0.205 − 0.005²) / 200); the bound
    # −0.005 − 1.645·SE·sqrt(200/N) clears −0.03 at N
    expected = 200 * (1.6449 * math.sqrt((0.205 - 0.005 ** 2) / 200) / 0.025) ** 2  # ≈ 887
    assert v["n_needed"] == pytest.approx(expected, rel=0.12)
    assert f"About {v['n_needed']:,} held-out examples (now 200)" in v["summary"]
    assert v["choice"] == "rag"  # until it is settled, the best arm, not the cheapest
    # the same examples ten times over (n=2000 > n_needed): few is now shown within the margin and, cheaper, chosen
    d10 = decide.decide(_evidence({"rag": (rag * 10, 2, None), "few": (few * 10, 20, None)}), CFG, FAST)
    v10 = d10["verdict"]
    assert d10["against_best"]["few"]["qualifies"] and d10["against_best"]["few"]["lower"] > -0.03
    assert v10["status"] == "decided" and v10["choice"] == "few" and v10["n_needed"] is None


def test_n_needed_is_where_the_bound_clears_the_margin():
    rag, few = _pair(100, 60, 12, 10)  # few 0.02 behind, 22 discordant
    d = decide.decide(_evidence({"rag": (rag, 2, None), "few": (few, 20, None)}), CFG, FAST)
    needed = d["verdict"]["n_needed"]
    below, above = math.floor(0.6 * needed / 100), math.ceil(1.5 * needed / 100)  # copies of the 100 examples
    short = decide.decide(_evidence({"rag": (rag * below, 2, None), "few": (few * below, 20, None)}), CFG, FAST)
    enough = decide.decide(_evidence({"rag": (rag * above, 2, None), "few": (few * above, 20, None)}), CFG, FAST)
    assert short["against_best"]["few"]["lower"] < -0.03 < enough["against_best"]["few"]["lower"]
    assert enough["verdict"]["choice"] == "few" and enough["verdict"]["status"] == "decided"


def test_beyond_the_margin_cannot_be_settled_as_non_inferior():
    rag, few = _pair(100, 55, 16, 8)  # few 0.08 behind: more than the margin, not significant on 100
    d = decide.decide(_evidence({"rag": (rag, 2, None), "few": (few, 20, None)}), CFG, FAST)
    v = d["verdict"]
    assert d["against_best"]["few"]["relation"] == "not_separable" and v["status"] == "undecided"
    assert v["open"]["settle_by"] == "superiority" and "cannot be settled as non-inferior" in v["summary"]
    # superiority at the observed difference: 1.96·SE·sqrt(100/N) < 0.08 with SE = sqrt(0.24/100)
    assert v["n_needed"] == pytest.approx(100 * (1.96 * math.sqrt(0.24 / 100) / 0.08) ** 2, rel=0.15)


def test_superiority_of_fine_tuning():
    n = 300
    rag, lora = _pair(n, 150, 10, 90)  # lora right on 80 more
    d = decide.decide(_evidence({"rag": (rag, 10, None), "lora": (lora, 20, TRAINING)}), CFG, FAST)
    v = d["verdict"]
    assert d["best"] == "lora" and d["against_best"]["rag"]["relation"] == "worse"
    assert v["choice"] == "lora" and v["fine_tuning_justified"] is True and v["status"] == "decided"
    assert v["summary"].startswith("Fine-tuning is justified: lora")
    # the sentence names lora first ("lora is better than rag"), so the difference it quotes is lora − rag > 0
    r = d["against_best"]["rag"]
    assert f"difference {-r['difference']:+.3f}" in v["summary"] and -r["difference"] > 0
    assert f"bounds [{-r['upper']:+.3f}, {-r['lower']:+.3f}]" in v["summary"]


def test_equivalence_within_the_margin_picks_the_cheaper_fine_tuned_arm_on_cost():
    rag, lora = _pair(3000, 2000, 30, 20)  # lora 0.0033 behind on 3000: equivalent within ±0.03
    fast_lora = {**TRAINING}
    big = cost.load_cost_config({**COST, "volume_per_month": 20_000_000})
    d = decide.decide(_evidence({"rag": (rag, 2, None), "lora": (lora, 40, fast_lora)}), big, FAST)
    r, v = d["against_best"]["lora"], d["verdict"]
    assert r["relation"] == "equivalent" and -0.03 < r["lower"] and r["upper"] < 0.03
    assert v["choice"] == "lora" and v["fine_tuning_justified"] is True
    assert v["summary"].startswith("Fine-tuning is justified on cost: lora")
    # at a small volume the upkeep of the adapter outweighs the serving saving: rag, fine-tuning not justified
    small = decide.decide(_evidence({"rag": (rag, 2, None), "lora": (lora, 40, fast_lora)}),
                          cost.load_cost_config({**COST, "volume_per_month": 1000}), FAST)
    assert small["verdict"]["choice"] == "rag" and small["verdict"]["fine_tuning_justified"] is False


def test_relation_labels_from_bootstrap_samples():
    rng = np.random.default_rng(0)
    around = lambda centre, spread: centre + spread * rng.standard_normal(4000)  # noqa: E731
    assert choice.relation(around(0.0, 0.005), 0.0, False, 500, 0.03, 0.05)["relation"] == "equivalent"
    assert choice.relation(around(0.01, 0.02), 0.01, False, 500, 0.03, 0.05)["relation"] == "non_inferior"
    assert choice.relation(around(-0.1, 0.01), -0.1, True, 500, 0.03, 0.05)["relation"] == "worse"
    assert choice.relation(around(0.1, 0.01), 0.1, True, 500, 0.03, 0.05)["relation"] == "better"
    assert choice.relation(around(-0.02, 0.05), -0.02, False, 500, 0.03, 0.05)["relation"] == "not_separable"


def test_error_costs_flip_the_choice_and_give_the_odds_of_being_cheapest():
    rag, few = _pair(4000, 2800, 100, 20)  # few 0.02 behind: within the margin, cheaper to serve
    ev = _evidence({"rag": (rag, 2, None), "few": (few, 20, None)})
    plain = decide.decide(ev, CFG, FAST)
    assert plain["verdict"]["choice"] == "few" and "p_cheapest" not in plain["costs"]
    priced = cost.load_cost_config({**COST, "error_cost": 0.1})
    d = decide.decide(ev, priced, FAST)
    # by hand: few saves (1/2 − 1/20) s × $3.6/h per request = $0.45 per 1k = $45/month at 100k, but makes 0.02 ×
    # 100k = 2000 more wrong answers a month at $0.10 = $200: rag is cheaper in total by $155
    arms = d["costs"]["arms"]
    assert arms["few"]["monthly_total"] - arms["rag"]["monthly_total"] == pytest.approx(200 - 45, rel=1e-6)
    assert d["verdict"]["choice"] == "rag" and "wrong answers at $0.10 each" in d["verdict"]["summary"]
    p = d["costs"]["p_cheapest"]
    assert sum(p.values()) == pytest.approx(1) and p["rag"] > 0.95 and d["costs"]["expected_regret"] >= 0
    # independently: few is cheapest on a resample when its accuracy deficit costs less than $45, i.e. when few
    # loses fewer than 0.0045 on that resample (the same seeded index sets as decide)
    idx = stats.bootstrap_indices(4000, FAST.resamples, FAST.seed)
    deficit = np.asarray(rag, float)[idx].mean(1) - np.asarray(few, float)[idx].mean(1)
    assert p["few"] == pytest.approx(float((deficit * 100_000 * 0.1 < 45).mean()))
    assert arms["rag"]["cost_per_correct"] == pytest.approx(arms["rag"]["monthly_total"] / (100_000 * 0.725))


def test_review_cost_prices_outputs_failing_a_rule():
    cfg = cost.load_cost_config({**COST, "review_cost": 2.0, "error_cost": 0.5})
    arm = {"usage": _usage(10, 10), "metrics": {"token_f1": 0.8, "rules_pass": 0.9}}
    priced = cost.arm_cost(arm, cfg, "token_f1")
    assert priced["error_cost_per_1k_requests"] == pytest.approx(1000 * (0.5 * 0.2 + 2.0 * 0.1))
    assert priced["monthly_total"] == pytest.approx(100 * (0.10 + 300.0))


def test_a_broken_arm_is_reported_but_never_chosen():
    n = 200
    rag, lora = _pair(n, 120, 0, 40)  # lora far better on what it answered, but 12% of its answers are invalid
    ev = _evidence({"rag": (rag, 10, None), "lora": (lora, 20, TRAINING, range(150, 174))})
    d = decide.decide(ev, CFG, FAST)
    v = d["verdict"]
    assert d["failures"]["lora"]["broken"] and d["failures"]["lora"]["rate"] == pytest.approx(0.12)
    assert v["choice"] == "rag" and "lora" not in d["eligible"]
    assert "cannot be chosen" in v["summary"] and any(c.startswith("Broken arm: lora") for c in v["caveats"])
    assert v["fine_tuning_justified"] is None  # its only fine-tuned arm is broken: the run cannot tell
    loose = decide.decide(ev, CFG, decide.Settings(resamples=1000, max_failure_rate=0.2))
    assert loose["verdict"]["choice"] == "lora"


def test_when_every_arm_without_fine_tuning_is_broken_the_verdict_says_so():
    n = 100
    rag, lora = _pair(n, 40, 20, 0)  # rag ahead, but 10% of its answers are invalid JSON-like failures
    ev = _evidence({"rag": (rag, 10, None, range(90, 100)), "lora": (lora, 20, TRAINING)})
    v = decide.decide(ev, CFG, FAST)["verdict"]
    assert v["choice"] == "lora" and v["fine_tuning_justified"] is None
    assert "Every arm without fine-tuning is broken (rag" in v["summary"]
    assert "nothing without fine-tuning" not in v["summary"]


def test_every_arm_broken_or_failed_wholesale_leaves_no_choice():
    n = 50
    ev = _evidence({"served": ([0] * n, 10, None, range(n), n), "few": ([1] * 30 + [0] * 20, 10, None, range(10))})
    d = decide.decide(ev, CFG, FAST)
    assert d["verdict"]["choice"] is None and d["verdict"]["status"] == "no_choice"
    assert d["failures"]["served"]["wholesale"] and not d["failures"]["few"]["wholesale"]
    assert d["verdict"]["summary"].startswith("No arm can be chosen")


def test_one_arm_or_only_fine_tuned_arms_cannot_tell():
    lora = [1] * 77 + [0] * 23
    v = decide.decide(_evidence({"lora": (lora, 10, TRAINING)}), CFG, FAST)["verdict"]
    assert v["fine_tuning_justified"] is None and "cannot tell whether fine-tuning is justified" in v["summary"]
    assert "Fine-tuning is justified" not in v["summary"]
    both = _evidence({"lora": (lora, 10, TRAINING), "lora_big": ([1] * 79 + [0] * 21, 5, TRAINING)})
    v = decide.decide(both, CFG, FAST)["verdict"]
    assert v["fine_tuning_justified"] is None and "Every arm that can be chosen is fine-tuned" in v["summary"]


def test_the_verdict_is_stable_under_the_seeded_bootstrap():
    rag, few = _pair(200, 130, 21, 20)
    ev = _evidence({"rag": (rag, 2, None), "few": (few, 20, None)})
    first, again = decide.decide(ev, CFG, FAST), decide.decide(ev, CFG, FAST)
    assert first["verdict"] == again["verdict"] and first["against_best"] == again["against_best"]
    other = decide.decide(ev, CFG, decide.Settings(resamples=1000, seed=5))
    assert other["verdict"]["status"] == first["verdict"]["status"]
    assert other["verdict"]["n_needed"] == pytest.approx(first["verdict"]["n_needed"], rel=0.15)


def test_the_decision_map_agrees_with_the_verdict_at_the_current_setting():
    rag, lora = _pair(3000, 2000, 30, 20)
    d = decide.decide(_evidence({"rag": (rag, 2, None), "lora": (lora, 40, TRAINING)}), CFG, FAST)
    m = d["decision_map"]
    assert m["volumes"][0] == pytest.approx(1e3) and m["volumes"][-1] == pytest.approx(1e8)
    assert m["error_costs"][0] == 0
    col = int(np.argmin(np.abs(np.log10(m["volumes"]) - np.log10(CFG.volume_per_month))))
    low, high = m["choice"][0][0], m["choice"][0][-1]
    assert (low, high) == ("rag", "lora")  # the adapter's upkeep pays back only at volume
    be = d["break_even"]["lora"]["requests_per_month"]
    assert m["choice"][0][col] == ("lora" if m["volumes"][col] > be else "rag")

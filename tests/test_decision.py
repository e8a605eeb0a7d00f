"""Statistics against hand-computed values, the cost arithmetic, and the verdict rule on constructed result sets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness import scoring
from harness.decision import cost
from harness.decision import decide
from harness.decision import stats
from harness.decision import uncertainty
from harness.kinds import classification
from harness.errors import ConfigError
from harness.rundata import settings as load_settings

LABELS = ["a", "b", "c"]


# ---------------------------------------------------------------- statistics
def test_mcnemar_exact_matches_the_binomial_by_hand():
    # A right / B wrong on 7 examples, the reverse on 1, both right on 10, both wrong on 2.
    a = [1] * 7 + [0] * 1 + [1] * 10 + [0] * 2
    b = [0] * 7 + [1] * 1 + [1] * 10 + [0] * 2
    r = stats.mcnemar_exact(a, b)
    assert (r["a_only"], r["b_only"]) == (7, 1)
    assert r["p_value"] == pytest.approx(2 * (math.comb(8, 0) + math.comb(8, 1)) / 2 ** 8)  # 0.0703125
    assert stats.mcnemar_exact([1, 0, 1], [1, 0, 1])["p_value"] == 1.0


def test_holm_by_hand():
    # sorted: 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [1] * 60 + [0] * 40
    ci1 = stats.bootstrap_mean_ci(values, resamples=2000, seed=7)
    ci2 = stats.bootstrap_mean_ci(values, resamples=2000, seed=7)
    assert ci1 == ci2
    assert ci1[0] < 0.6 < ci1[1]
    # normal approximation: 0.6 ± 1.96·sqrt(0.24/100) = [0.504, 0.696]
    assert ci1[0] == pytest.approx(0.504, abs=0.025) and ci1[1] == pytest.approx(0.696, abs=0.025)
    assert stats.bootstrap_mean_ci(values, resamples=2000, seed=8) != ci1


def test_paired_bootstrap_and_detectable_difference():
    rng = np.random.default_rng(0)
    a = (rng.random(200) < 0.8).astype(float)
    b = (rng.random(200) < 0.5).astype(float)
    idx = stats.bootstrap_indices(200, 2000, 0)
    far = stats.paired_bootstrap(a[idx].mean(1), b[idx].mean(1), a.mean() - b.mean())
    assert far["p_value"] < 0.001 and far["ci"][0] > 0
    same = stats.paired_bootstrap(a[idx].mean(1), a[idx].mean(1), 0.0)
    assert same["p_value"] == 1.0
    assert stats.detectable_difference(0.05) == pytest.approx((1.959964 + 0.841621) * 0.05, rel=1e-5)
    assert stats.worst_case_detectable(100) > stats.worst_case_detectable(1000)


@pytest.mark.parametrize("task_type,records,labels", [
    ("classification", [{"correct": int(g == p), "invalid": int(p is None), "gold": g, "parsed": p}
                        for g, p in [("a", "a"), ("b", "a"), ("c", None), ("c", "c"), ("b", "b"), ("a", "c")]],
     LABELS),
    ("extraction", [{"valid_json": 1, "tp": 2, "fp": 1, "fn": 0, "record_exact_match": 0, "field_accuracy": 0.5},
                    {"valid_json": 0, "tp": 0, "fp": 0, "fn": 2, "record_exact_match": 0, "field_accuracy": 0.0},
                    {"valid_json": 1, "tp": 3, "fp": 0, "fn": 0, "record_exact_match": 1, "field_accuracy": 1.0}], ()),
    ("generation", [{"exact_match": 1, "token_f1": 1.0, "recall@1": 1.0, "reciprocal_rank": 1.0},
                    {"exact_match": 0, "token_f1": 0.4, "recall@1": 0.0, "reciprocal_rank": 0.5}], ()),
])
def test_bootstrap_samples_on_the_full_index_equal_the_scored_metrics(task_type, records, labels):
    full = np.arange(len(records))[None, :]
    samples = uncertainty.metric_samples(task_type, records, full, labels)
    point = scoring.aggregate(task_type, records, labels)
    assert set(samples) == set(point)
    for metric, value in point.items():
        assert samples[metric][0] == pytest.approx(value), metric
    # and a resample is the metric of the resampled records
    idx = np.array([[0, 0, 1] if len(records) > 2 else [0, 0]])
    picked = [records[i] for i in idx[0]]
    for metric, value in scoring.aggregate(task_type, picked, labels).items():
        assert uncertainty.metric_samples(task_type, records, idx, labels)[metric][0] == pytest.approx(value)


def test_macro_f1_matches_scoring_on_random_resamples():
    rng = np.random.default_rng(1)
    gold = rng.choice(LABELS, 50)
    parsed = [g if rng.random() < 0.6 else rng.choice(LABELS + [None]) for g in gold]
    records = classification.score_labels(LABELS, list(gold), [p or "???" for p in parsed])["per_example"]
    idx = stats.bootstrap_indices(50, 30, 3)
    samples = uncertainty.metric_samples("classification", records, idx, LABELS)["macro_f1"]
    for row, value in zip(idx, samples):
        assert value == pytest.approx(scoring.aggregate("classification", [records[i] for i in row], LABELS)["macro_f1"])


# ---------------------------------------------------------------- cost
COST = {"example": False, "currency": "USD", "volume_per_month": 100_000, "horizon_months": 12,
        "self_hosted": {"price_per_hour": 3.6},
        "fine_tuning": {"retrain_every_months": 3, "upkeep_per_month": 100.0, "labelling_cost_per_example": 0.5},
        "reference_api": {"name": "big", "input_per_1m": 2.0, "output_per_1m": 10.0, "prompts_of": "few"}}


def _usage(examples_per_s: float, tokens_in: float = 100.0, tokens_out: float = 1.0) -> dict:
    return {"examples_per_s": examples_per_s, "input_tokens": {"mean": tokens_in}, "output_tokens": {"mean": tokens_out},
            "latency_s": {"mean": 1 / examples_per_s}, "truncated": 0}


def test_cost_arithmetic_and_break_even_by_hand():
    cfg = cost.load_cost_config(COST)
    # 10 requests/s at $3.6/hour = $0.001/s: 0.1 s per request -> $0.0001 per request -> $0.10 per 1k
    plain = cost.arm_cost({"usage": _usage(10), "prepare_s": 0.0}, cfg)
    assert plain["per_1k_requests"] == pytest.approx(0.10)
    assert plain["monthly_total"] == pytest.approx(100 * 0.10)
    # tuned: 40 requests/s -> $0.025 per 1k; training 3600 s = $3.6; 200 labelled examples x $0.5 = $100
    tuned = cost.arm_cost({"usage": _usage(40), "training": {"wall_s": 3600, "train_examples": 180,
                                                            "dev_examples": 20}}, cfg)
    assert tuned["per_1k_requests"] == pytest.approx(0.025)
    assert tuned["one_off"] == pytest.approx(3.6 + 100)
    assert tuned["recurring_per_month"] == pytest.approx(100 + 3.6 / 3)
    assert tuned["monthly_total"] == pytest.approx(100 * 0.025 + 101.2 + 103.6 / 12)
    be = cost.break_even(tuned, plain, 12)
    fixed = 101.2 + 103.6 / 12
    assert be["requests_per_month"] == pytest.approx(fixed / (0.10 - 0.025) * 1000)
    assert cost.monthly_total(tuned, be["requests_per_month"], 12) == pytest.approx(
        cost.monthly_total(plain, be["requests_per_month"], 12))
    never = cost.break_even(plain, tuned, 12)  # the dearer-per-request arm never pays back
    assert never["requests_per_month"] is None and "cheaper only below" in never["reason"]
    api = cost.reference_api_cost({"usage": _usage(10, 1000, 10)}, cfg)
    assert api["per_1k_requests"] == pytest.approx(1000 * (1000 * 2.0 + 10 * 10.0) / 1e6)


def test_each_arm_is_priced_by_its_own_backend():
    cfg = cost.load_cost_config({**COST, "api_prices": {"big": {"input_per_1m": 2.0, "output_per_1m": 8.0}}})
    served = {"backend": "openai-http", "name_or_path": "big"}
    api = cost.arm_cost({"usage": _usage(2, 500, 20), "prepare_s": 100.0, "model": served}, cfg)
    assert api["pricing"] == "per_token" and api["one_off"] == 0.0
    assert api["per_1k_requests"] == pytest.approx(1000 * (500 * 2.0 + 20 * 8.0) / 1e6)  # tokens, not seconds
    own_server = {"backend": "openai-http", "name_or_path": "my-llama"}  # not in api_prices: a server you host
    hosted = cost.arm_cost({"usage": _usage(10, 500, 20), "prepare_s": 0.0, "model": own_server}, cfg)
    assert hosted["pricing"] == "per_hour" and hosted["per_1k_requests"] == pytest.approx(0.10)


@pytest.mark.parametrize("patch,field", [
    ({"volume_per_month": -1}, "cost.volume_per_month"),
    ({"self_hosted": {"price_per_hour": "cheap"}}, "cost.self_hosted.price_per_hour"),
    ({"horizon_months": 0}, "cost.horizon_months"),
    ({"api_prices": {"big": {"input_per_1m": 1}}}, "cost.api_prices.big.output_per_1m"),
    ({"reference_api": {"name": "x", "input_per_1m": 1, "output_per_1m": 1}}, "cost.reference_api.prompts_of"),
])
def test_bad_cost_config_names_the_field(patch, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        cost.load_cost_config({**COST, **patch})


def test_bad_decision_settings_name_the_field():
    with pytest.raises(ConfigError, match="decision.tolerence"):
        load_settings({"tolerence": 0.1}, 0)
    with pytest.raises(ConfigError, match="decision.resamples"):
        load_settings({"resamples": 10}, 0)
    with pytest.raises(ConfigError, match="decision.max_failure_rate"):
        load_settings({"max_failure_rate": 1.5}, 0)


def test_margin_reads_its_earlier_names_from_older_runs():
    assert load_settings({}, 0).margin == 0.03
    assert load_settings({"tolerance": 0.0, "meaningful_difference": 0.03}, 0).margin == 0.03  # an old run.json
    assert load_settings({"tolerance": 0.02, "meaningful_difference": 0.03}, 0).margin == 0.02  # set on purpose
    assert load_settings({"margin": 0.03, "tolerance": 0.05}, 0).margin == 0.05  # decision.tolerance=0.05 as before
    assert load_settings({"margin": 0.01, "tolerance": None, "meaningful_difference": None}, 0).margin == 0.01


# ---------------------------------------------------------------- the verdict rule
def _records(correct: list[int]) -> list[dict]:
    return [{"correct": c, "invalid": 0, "gold": "a", "parsed": "a" if c else "b"} for c in correct]


def _evidence(arms: dict[str, tuple[list[int], float, dict | None]], **extra) -> decide.Evidence:
    """arms: name -> (per-example correctness, examples/s, training or None)."""
    results, records = {}, {}
    for name, (correct, speed, training) in arms.items():
        records[name] = _records(correct)
        results[name] = {"metrics": scoring.aggregate("classification", records[name], LABELS),
                         "usage": _usage(speed), "training": training, "prepare_s": 1.0, "n": len(correct)}
    return decide.Evidence(task_type="classification", primary="accuracy", labels=LABELS, arms=results,
                           records=records, **extra)


TRAINING = {"wall_s": 600.0, "train_examples": 400, "dev_examples": 50}
CFG = cost.load_cost_config(COST)


def _pattern(n: int, right: int, offset: int = 0) -> list[int]:
    return [1 if (i + offset) % n < right else 0 for i in range(n)]


def test_clear_win_for_fine_tuning():
    n = 300
    ev = _evidence({"few": (_pattern(n, 120), 10, None), "rag": (_pattern(n, 150), 5, None),
                    "lora": ([1] * 270 + [0] * 30, 20, TRAINING)})
    d = decide.decide(ev, CFG, decide.Settings(resamples=1000))
    v = d["verdict"]
    assert v["choice"] == "lora" and v["fine_tuning_justified"] is True
    assert v["summary"].startswith("Fine-tuning is justified")
    assert all(t["significant"] for t in d["paired_tests"] if "lora" in (t["a"], t["b"]))
    assert d["break_even"]["lora"]["against"] == "rag"
    assert d["intervals"]["lora"]["accuracy"]["ci"][0] < 0.9 < d["intervals"]["lora"]["accuracy"]["ci"][1]


def test_tie_means_the_cheaper_arm_and_says_it_cannot_separate():
    n = 200
    rag = _pattern(n, 150)
    lora = list(rag)
    for i in [*range(0, 6), *range(150, 155)]:  # 6 lost, 5 gained: a statistical tie
        lora[i] = 1 - lora[i]
    ev = _evidence({"rag": (rag, 10, None), "lora": (lora, 10, TRAINING)})
    d = decide.decide(ev, CFG, decide.Settings(resamples=1000))
    v = d["verdict"]
    assert v["choice"] == "rag" and v["fine_tuning_justified"] is False and v["status"] == "decided"
    assert d["against_best"]["lora"]["relation"] == "not_separable"  # but it costs more: nothing is left open
    assert v["summary"].startswith("Fine-tuning is not justified at 100k requests/month")


def test_fine_tuning_wins_but_within_the_margin_and_too_expensive():
    n = 2000  # large enough that a 3-point gain is significant
    ev = _evidence({"rag": (_pattern(n, 1400), 10, None),
                    "lora": ([1 if i < 1460 else 0 for i in range(n)], 10, TRAINING)})
    strict = decide.decide(ev, CFG, decide.Settings(resamples=1000))
    assert strict["verdict"]["choice"] == "lora"  # rag is significantly worse by about the margin: lora alone
    assert strict["against_best"]["rag"]["relation"] == "worse"
    tolerant = decide.decide(ev, CFG, decide.Settings(resamples=1000, margin=0.05))
    v = tolerant["verdict"]
    assert v["choice"] == "rag" and v["fine_tuning_justified"] is False and v["status"] == "decided"
    assert tolerant["against_best"]["rag"]["relation"] == "equivalent"  # [-0.036, -0.024] inside ±0.05
    assert "equivalent within ±0.05 to the best arm, the fine-tuned lora" in v["summary"]


def test_too_small_held_out_is_a_caveat():
    n = 20
    ev = _evidence({"few": (_pattern(n, 11), 10, None), "lora": (_pattern(n, 13, offset=3), 20, TRAINING)})
    v = decide.decide(ev, CFG, decide.Settings(resamples=1000))["verdict"]
    assert any(c.startswith("Held-out set too small") for c in v["caveats"])
    # the cheaper few is not separable from the better lora on 20 examples: the verdict is open, not "cheapest wins"
    assert v["status"] == "undecided" and v["fine_tuning_justified"] is None and v["open"]["arm"] == "few"
    assert v["summary"].startswith("Undecided") and v["n_needed"] > n


def test_forgetting_leakage_pii_and_few_examples_become_caveats():
    n = 200
    control = {"name": "general", "base": [1] * 60 + [0] * 40, "arms": {"lora": [1] * 40 + [0] * 60}}
    checks = {"near_threshold": 0.95, "overlap": {"train": {"exact": [{"heldout": "h1", "other": "t1"}], "near": []}},
              "pii": {"counts": {"email": 2}, "examples": [{"id": "t7", "kinds": ["email"]}]},
              "answers_in_train": {"n": 50, "of": 200, "ids": [f"h{i}" for i in range(50)]}}
    ev = _evidence({"rag": (_pattern(n, 100), 10, None),
                    "lora": ([1] * 180 + [0] * 20, 10, {**TRAINING, "train_examples": 40})},
                   control=control, data_checks=checks)
    d = decide.decide(ev, CFG, decide.Settings(resamples=1000))
    caveats = " ".join(d["verdict"]["caveats"])
    assert d["forgetting"]["arms"]["lora"]["change"] == pytest.approx(-0.2)
    assert d["forgetting"]["arms"]["lora"]["ci"][1] < 0
    for needle in ("Forgetting: lora", "Leakage: 1 held-out", "Data governance: 1 training", "Few training examples",
                   "Answers seen in training: 50 of 200 held-out reference answers (25%)"):
        assert needle in caveats
    assert "@" not in caveats  # PII values are never printed


def test_a_fine_tuned_arm_perhaps_short_of_its_best_is_a_caveat():
    """Read from the recorded epochs (old result folders have them too), not from the trainer's warnings."""
    def curve(losses):
        return [{"epoch": i + 1, "train_loss": 1.0, "dev_loss": x} for i, x in enumerate(losses)]

    def caveats(training):
        ev = _evidence({"rag": (_pattern(200, 150), 10, None), "lora": (_pattern(200, 120), 10, training)})
        return " ".join(decide.decide(ev, CFG, decide.Settings(resamples=300))["verdict"]["caveats"])

    capped = {**TRAINING, "history": curve([0.9, 0.7]), "best_epoch": 2, "epochs_run": 2, "stop_reason": "fixed epochs"}
    assert "Possibly undertrained: lora's dev loss was still improving at its last epoch (2, stopped: fixed epochs)" \
        in caveats(capped)
    first = {**TRAINING, "history": curve([0.5, 0.7, 0.9]), "best_epoch": 1, "epochs_run": 3, "stop_reason": "plateau"}
    assert "Possibly past its best: lora's dev loss was best after the first of 3 epochs" in caveats(first)
    middle = {**TRAINING, "history": curve([0.9, 0.5, 0.7, 0.8]), "best_epoch": 2, "epochs_run": 4,
              "stop_reason": "plateau"}
    plateau_at_cap = {**capped, "stop_reason": "plateau"}  # best at the last epoch, but patience said stop
    one_epoch = {**TRAINING, "history": curve([0.5]), "best_epoch": 1, "epochs_run": 1, "stop_reason": "fixed epochs"}
    for fine in (middle, plateau_at_cap, one_epoch, TRAINING):
        assert "Possibly" not in caveats(fine)
    ev = _evidence({"rag": (_pattern(200, 150), 10, None), "lora": (_pattern(200, 120), 10, first),
                    "combined": (_pattern(200, 130), 10, {**first, "epochs_run": 6})})
    both = [c for c in decide.decide(ev, CFG, decide.Settings(resamples=300))["verdict"]["caveats"]
            if c.startswith("Possibly past its best")]
    assert both == ["Possibly past its best: lora's dev loss was best after the first of 3 epochs; combined's dev "
                    "loss was best after the first of 6 epochs, and worse after it, so the best point may lie "
                    "within that epoch; a lower learning_rate may train a better adapter, and the verdict may "
                    "understate fine-tuning."]  # one caveat naming both arms


def test_no_fine_tuned_arm_says_so():
    ev = _evidence({"few": (_pattern(100, 40), 10, None), "rag": (_pattern(100, 70), 5, None)})
    v = decide.decide(ev, CFG, decide.Settings(resamples=500))["verdict"]
    assert v["choice"] == "rag" and "No fine-tuned arm ran" in v["summary"]
    assert v["fine_tuning_justified"] is None  # nothing tuned to compare with: the run cannot tell


def test_bounds_that_leave_out_zero_without_a_corrected_difference_are_called_uncorrected():
    """The demo's shape: lora's one-sided bounds against the best are both below 0, yet Holm's correction over every
    pair leaves the difference not significant. The verdict must not say "not shown worse" against its own bounds
    without saying which of the two is corrected."""
    clf = [1] * 113 + [0] * 17
    lora = [0] * 20 + clf[20:113] + [1] * 7 + [0] * 10          # 20 lost and 7 gained against clf
    rag = lora[:20] + [0] * 10 + lora[30:120] + [1] * 6 + [0] * 4
    few = rag[:30] + [0] * 8 + rag[38:126] + [1] * 4
    ev = _evidence({"clf": (clf, 1000, None), "lora": (lora, 20, TRAINING), "rag": (rag, 5, None),
                    "few": (few, 10, None)})
    d = decide.decide(ev, CFG, decide.Settings(resamples=1000))
    r = d["against_best"]["lora"]
    assert d["best"] == "clf" and r["relation"] == "not_separable" and r["upper"] < 0 < r["p_holm"] - 0.05
    assert "(uncorrected; not significant after Holm's correction over the 6 paired tests)" in d["verdict"]["summary"]
    clear = decide.decide(_evidence({"clf": (clf, 1000, None), "lora": (clf[:60] + [0] * 70, 20, TRAINING)}), CFG,
                          decide.Settings(resamples=1000))
    assert "uncorrected" not in clear["verdict"]["summary"]  # a corrected, significant difference needs no such note

"""The typed records of a run (harness/records.py): JSON round trip, results folders written before the records
existed (replicates named `arm@seedN`, no `fine_tuned` or `served_by_api`), and the readers that use the fields."""

from __future__ import annotations

import json
import re

import pytest
from rich.console import Console

from harness.decision import cost
from harness.report import display
from harness.report import render as report
from harness.records import ArmResult, Comparison, Stat, Training, Usage, replicate_mean, replicate_name
from harness.report.rows import arm_rows


def _usage(n: int = 4, per_s: float = 2.0) -> dict:
    stat = {"total": 40.0, "mean": 10.0, "p50": 10.0, "p95": 12.0}
    return {"n": n, "input_tokens": stat, "output_tokens": {**stat, "mean": 2.0}, "latency_s": stat, "truncated": 0,
            "failed": 1, "examples_per_s": per_s}


TRAINING = {"wall_s": 30.0, "tokens_seen": 900, "tokens_per_s": 30.0, "peak_memory_mb": 2048.0,
            "peak_memory_kind": "process_max_rss", "device": "cpu", "autocast": None, "trainable_parameters": 3584,
            "train_examples": 16, "dev_examples": 4, "best_epoch": 1,
            "history": [{"epoch": 1, "train_loss": 2.0, "dev_loss": 2.1}], "cached": True}
HF = {"backend": "transformers", "name_or_path": "tiny"}


def _old_comparison() -> dict:
    """comparison.json as runs wrote it before harness/records.py: replicates told apart by name only."""
    plain = {"summary": "2-shot", "n": 4, "prepare_s": 0.5, "training": None, "usage": _usage(), "model": HF}
    return {"task": "tiny", "task_type": "classification", "primary_metric": "accuracy", "heldout_n": 4,
            "run_dir": "/r", "model": HF, "labels": ["a", "b"], "fields": [], "strategies": {
                "zero_shot": {**plain, "metrics": {"accuracy": 0.25}},
                "prompt_only@seed0": {**plain, "metrics": {"accuracy": 0.5, "macro_f1": 0.4}},
                "prompt_only@seed1": {**plain, "metrics": {"accuracy": 0.75, "macro_f1": 0.6}},
                "lora": {**plain, "summary": "LoRA", "metrics": {"accuracy": 0.75}, "training": TRAINING},
                "api": {**plain, "metrics": {"accuracy": 0.5},
                        "model": {"backend": "openai-http", "name_or_path": "big-general-model"}},
                "retrieval": {"error": "ConfigError: no knowledge"},
                "prompt_only": {"summary": "mean of 2 seeds", "replicates": ["prompt_only@seed0", "prompt_only@seed1"],
                                "metrics": {"accuracy": 0.625, "macro_f1": 0.5},
                                "metrics_seed_std": {"accuracy": 0.177, "macro_f1": 0.141}, "n": 4, "usage": _usage(),
                                "model": HF, "training": None}}}


def test_an_old_results_folder_reads_replicates_fine_tuning_and_api_serving_from_what_it_recorded():
    c = Comparison.from_json(_old_comparison())
    seed1 = c.arms["prompt_only@seed1"]
    assert (seed1.replicate_of, seed1.seed, seed1.is_replicate) == ("prompt_only", 1, True)
    assert c.arms["prompt_only"].is_mean and c.arms["prompt_only"].replicate_of is None
    assert c.compared == ["zero_shot", "lora", "api", "prompt_only"]  # failed arms and single seeds left out
    assert [a for a, r in c.arms.items() if r.scored_here] == ["zero_shot", "prompt_only@seed0", "prompt_only@seed1",
                                                               "lora", "api"]
    assert c.arms["lora"].fine_tuned and not c.arms["zero_shot"].fine_tuned and not c.arms["prompt_only"].fine_tuned
    assert c.arms["api"].served_by_api and not c.arms["lora"].served_by_api
    assert c.arms["retrieval"].failed and c.arms["retrieval"].error == "ConfigError: no knowledge"
    assert c.arms["lora"].training.cached and c.arms["lora"].training.labelled_examples == 20
    assert c.arms["lora"].usage.input_tokens.mean == 10.0 and c.arms["lora"].usage.failed == 1


def test_writing_an_old_comparison_back_keeps_every_key_and_value_and_only_adds():
    raw = _old_comparison()
    again = Comparison.from_json(raw).to_json()
    assert list(again) == list(raw)  # same keys in the same order
    for key, value in raw.items():
        if key != "strategies":
            assert again[key] == value, key
    for arm, old in raw["strategies"].items():
        new = again["strategies"][arm]
        assert {k: new[k] for k in old} == old, arm  # every recorded key, same value
        assert set(new) - set(old) <= {"fine_tuned", "served_by_api", "replicate_of", "seed"}
    assert again["strategies"]["prompt_only@seed0"]["replicate_of"] == "prompt_only"
    assert again["strategies"]["prompt_only@seed0"]["seed"] == 0


def test_records_round_trip_through_json():
    usage = Usage(n=2, input_tokens=Stat(10.0, 5.0, 5.0, 6.0), output_tokens=Stat(2.0, 1.0, 1.0, 1.0),
                  latency_s=Stat(1.0, 0.5, 0.5, 0.6), truncated=1, failed=0, examples_per_s=2.0,
                  backend={"requests": 2, "retries": 0})
    training = Training.from_json(TRAINING)
    tuned = ArmResult.measured("lora@seed3", summary="LoRA", metrics={"accuracy": 0.5}, n=2, prepare_s=3.0,
                               training=training, usage=usage, model=HF).replicate("lora", 3)
    failed = ArmResult(name="combined", error="every replicate failed", replicates=("combined@seed0",))
    c = Comparison(task="t", task_type="classification", primary_metric="accuracy", heldout_n=2, run_dir="/r",
                   model=HF, labels=["a"], arms={"lora@seed3": tuned, "combined": failed},
                   judge={"agreement": {"n": 0}}, decision={"verdict": {"choice": None}}, other={"added_later": 1})
    text = json.dumps(c.to_json())
    back = Comparison.from_json(json.loads(text))
    assert back == c
    assert back.arms["lora@seed3"].training.other["tokens_seen"] == 900  # fields not typed are kept as recorded
    assert json.loads(text)["strategies"]["lora@seed3"]["training"] == TRAINING


def test_a_recorded_field_wins_over_what_an_old_folder_would_infer():
    raw = {"metrics": {"accuracy": 0.5}, "n": 4, "usage": _usage(), "training": TRAINING,
           "model": {"backend": "my-gateway", "name_or_path": "big-general-model"},
           "fine_tuned": False, "served_by_api": True}
    arm = ArmResult.from_json("x@seed2", {**raw, "replicate_of": "x", "seed": 7})
    assert not arm.fine_tuned and arm.served_by_api and arm.seed == 7
    cfg = cost.load_cost_config({"self_hosted": {"price_per_hour": 1.0}, "volume_per_month": 1000,
                                 "horizon_months": 12,
                                 "fine_tuning": {"upkeep_per_month": 100.0, "labelling_cost_per_example": 0.0},
                                 "api_prices": {"big-general-model": {"input_per_1m": 1e6, "output_per_1m": 0.0}}})
    priced = cost.arm_cost(arm, cfg, "accuracy")
    # served_by_api, not the backend's name, decides per-token pricing; fine_tuned, not `training`, decides upkeep
    assert priced["pricing"] == "per_token" and priced["per_1k_requests"] == pytest.approx(10_000.0)
    assert not priced["fine_tuned"] and priced["recurring_per_month"] == 0.0
    legacy = cost.arm_cost({k: v for k, v in raw.items() if k not in ("fine_tuned", "served_by_api")}, cfg)
    assert legacy["fine_tuned"] and legacy["pricing"] == "per_hour" and legacy["recurring_per_month"] == 100.0


def test_usage_of_predictions_summarises_tokens_latency_and_failures():
    records = [{"usage": {"input_tokens": t, "output_tokens": 1, "latency_s": 0.5, "failed": t == 30,
                          "truncated": t == 10}} for t in (10, 20, 30)]
    usage = Usage.of_predictions(records)
    assert (usage.n, usage.failed, usage.truncated) == (3, 1, 1)
    assert usage.input_tokens == Stat(total=60.0, mean=20.0, p50=20.0, p95=30.0)
    assert usage.examples_per_s == pytest.approx(2.0)
    assert Usage.of_predictions([]).to_json() == {
        "n": 0, "input_tokens": {"total": 0, "mean": None, "p50": None, "p95": None},
        "output_tokens": {"total": 0, "mean": None, "p50": None, "p95": None},
        "latency_s": {"total": 0, "mean": None, "p50": None, "p95": None}, "truncated": 0, "failed": 0,
        "examples_per_s": None}


def test_replicate_mean_averages_finished_seeds_and_fails_when_none_finished():
    c = Comparison.from_json(_old_comparison())
    members = [c.arms["prompt_only@seed0"], c.arms["prompt_only@seed1"],
               ArmResult(name=replicate_name("prompt_only", 2), error="boom")]
    mean = replicate_mean("prompt_only", members)
    assert mean.metrics == {"accuracy": 0.625, "macro_f1": 0.5}
    assert mean.metrics_seed_std["accuracy"] == pytest.approx(0.1768, abs=1e-4)
    assert mean.replicates == ("prompt_only@seed0", "prompt_only@seed1", "prompt_only@seed2")
    assert mean.summary == "mean of 2 seeds" and mean.compared and not mean.scored_here
    none = replicate_mean("x", [ArmResult(name="x@seed0", error="boom")])
    assert none.failed and none.to_json() == {"error": "every replicate failed", "replicates": ["x@seed0"]}


def test_the_terminal_table_and_the_report_show_the_same_rows():
    raw = _old_comparison()
    raw["decision"] = {"intervals": {"lora": {"accuracy": {"value": 0.75, "ci": [0.5, 1.0]}}},
                       "costs": {"currency": "USD", "arms": {"lora": {"per_1k_requests": 1.0, "monthly_total": 50.0,
                                                                      "cost_per_correct": 0.002, "one_off": 9.0}}},
                       "against_best": {"zero_shot": {"relation": "worse"}}, "verdict": {"choice": "lora"}}
    view = arm_rows(raw)
    assert [r.arm for r in view.rows] == list(raw["strategies"])
    lora = next(r for r in view.rows if r.arm == "lora")
    assert lora.chosen and lora.ci_text() == "[0.500, 1.000]" and lora.per_correct("USD") == "$2.00"
    assert view.mixed_models  # the api arm runs elsewhere
    reported = report._rows(Comparison.from_json(raw))
    assert [r["arm"] for r in reported] == [a for a in raw["strategies"] if "@seed" not in a]
    row = next(r for r in reported if r["arm"] == "lora")
    assert (row["ci"], row["per_correct"], row["train_s"], row["fine_tuned"], row["memory"]) == (
        "[0.500, 1.000]", "$2.00", "30 (cached)", True, "2.0 GB")
    assert next(r for r in reported if r["arm"] == "zero_shot")["relation"] == "worse"
    wide = Console(width=400)
    with wide.capture() as captured:
        wide.print(display.comparison_table(raw))
    shown = captured.get()
    assert "prompt_only@seed1" in shown and "lora ✓" in shown and "30 cached" in shown and "$2.00" in shown


def test_only_records_reads_the_replicate_naming_and_the_api_backend_name():
    from tests.conftest import ROOT

    code = {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8")
            for folder in ("harness", "strategies") for p in (ROOT / folder).rglob("*.py")}
    assert [p for p, text in code.items() if "@seed" in text] == ["harness/records.py"]
    readers = [f"decision/{m}" for m in ("cost", "decide", "choice", "caveats", "verdict")] + \
              [f"report/{m}" for m in ("display", "rows", "render", "plots", "curve", "compare", "sweep")] + \
              ["sweep", "record", "rundata", "tracking"]
    # they read ArmResult.served_by_api and .fine_tuned: none names a backend or infers tuning from `training`
    assert [r for r in readers if "openai-http" in code[f"harness/{r}.py"]] == []
    assert [r for r in readers if re.search(r"bool\((r\.get\(|arm\.get\(|result\.get\()?[\"']?training|bool\(t\)",
                                            code[f"harness/{r}.py"])] == []


def test_constrained_usage_and_training_stop_reasons_are_typed_and_only_written_when_recorded():
    base = {"input_tokens": 5, "output_tokens": 3, "latency_s": 0.5}
    assert "grammar_s" not in Usage.of_predictions([{"usage": base}]).to_json()  # unconstrained: as before
    usage = Usage.of_predictions([{"usage": {**base, "constrained": "json_schema", "grammar_s": 0.25}},
                                  {"usage": {**base, "constrained": "json_schema", "grammar_s": 0.75,
                                             "grammar_unfinished": True}}])
    assert usage.grammar_s.total == 1.0 and usage.grammar_unfinished == 1
    assert Usage.from_json(json.loads(json.dumps(usage.to_json()))) == usage
    old = Training.from_json(TRAINING)
    assert old.stop_reason is None and "stop_reason" not in old.to_json()  # an older run's record stays as it was
    new = Training.from_json({**TRAINING, "epochs_run": 3, "stop_reason": "dev loss rose", "optimizer_steps": 12})
    assert (new.best_epoch, new.epochs_run, new.stop_reason) == (1, 3, "dev loss rose")
    rows = report._rows(Comparison(task="t", task_type="classification", primary_metric="accuracy", arms={
        "lora": ArmResult.measured("lora", metrics={"accuracy": 1.0}, n=1, usage=usage, model=HF, training=new),
        "old": ArmResult.measured("old", metrics={"accuracy": 1.0}, n=1, usage=usage, model=HF, training=old)}))
    assert [r["epochs"] for r in rows] == ["best epoch 1 of 3, stopped: dev loss rose, 12 optimizer steps", ""]

"""One real end-to-end sweep on the packaged model (SmolLM2-135M-Instruct) and embedder, all four arms: part of the
default test command (`make test`)."""

import json
from collections import Counter

import pytest

from tests.conftest import run_harness

ARMS = ("zero_shot", "prompt_only", "retrieval", "lora")


@pytest.mark.slow
def test_demo_sweep_on_the_packaged_model(tmp_path):
    out = tmp_path / "run"
    r = run_harness("task=support_triage", f"results_dir={out}", "limit.heldout=40", "limit.train=120",
                    f"strategies=[{','.join(ARMS)}]", f"cache_dir={tmp_path / 'cache'}",
                    "strategies.lora.max_epochs=2", timeout=1200)  # epochs auto, capped: this test stays fast
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["model"]["name_or_path"] == "packaged:smollm2-135m-instruct"
    for name in ARMS:
        entry = comparison["strategies"][name]
        assert entry["n"] == 40 and entry["metrics"]["invalid_rate"] == 0
        assert entry["metrics"]["accuracy"] > 1 / 10, name  # better than chance over ten queues
    arms = comparison["strategies"]
    assert arms["prompt_only"]["usage"]["input_tokens"]["mean"] > arms["zero_shot"]["usage"]["input_tokens"]["mean"]
    # the calibrated few-shot arm must not collapse onto one label (the failure mode of an unfair prompt arm)
    outputs = Counter(json.loads(line)["output"]
                      for line in (out / "prompt_only" / "predictions.jsonl").read_text().splitlines())
    assert len(outputs) >= 5 and outputs.most_common(1)[0][1] <= 20
    # retrieval records what it retrieved; the fine-tuned arm records what training cost
    first = json.loads((out / "retrieval" / "predictions.jsonl").read_text().splitlines()[0])
    assert len(first["retrieved"]) == 5 and first["usage"]["retrieval_s"] > 0
    training = arms["lora"]["training"]
    assert training["wall_s"] > 0 and training["tokens_seen"] > 0 and training["peak_memory_mb"] > 0
    history = json.loads((out / "lora" / "prepare.json").read_text())["report"]["training"]["history"]
    assert history[-1]["dev_loss"] < history[0]["train_loss"]  # it learned
    assert "lora" in r.stdout and "train (s)" in r.stdout
    # the run ends with a decision: intervals, paired tests, costs, the forgetting check, a verdict and the report
    decision = comparison["decision"]
    assert decision["verdict"]["choice"] in ARMS and decision["verdict"]["summary"]
    assert len(decision["paired_tests"]) == len(ARMS) * (len(ARMS) - 1) // 2
    forgot = decision["forgetting"]["arms"]["lora"]
    assert forgot["ci"][0] <= forgot["change"] <= forgot["ci"][1]
    assert decision["forgetting"]["n"] == 120 and 0.25 < decision["forgetting"]["base_accuracy"] <= 1.0
    assert (out / "report.html").stat().st_size > 50_000 and "Verdict: " in r.stdout

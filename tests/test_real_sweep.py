"""One real end-to-end sweep on the packaged model (SmolLM2-135M-Instruct): part of the default test command."""

import json
from collections import Counter

import pytest

from tests.conftest import run_harness


@pytest.mark.slow
def test_demo_sweep_on_the_packaged_model(tmp_path):
    out = tmp_path / "run"
    r = run_harness("task=support_triage", f"results_dir={out}", "limit.heldout=40",
                    "strategies=[zero_shot,prompt_only]", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["model"]["name_or_path"] == "packaged:smollm2-135m-instruct"
    task_labels = 10
    for name in ("zero_shot", "prompt_only"):
        entry = comparison["strategies"][name]
        assert entry["n"] == 40 and entry["metrics"]["invalid_rate"] == 0
        # better than chance (0.1 for ten queues) on real tickets
        assert entry["metrics"]["accuracy"] > 1 / task_labels
    few_shot = comparison["strategies"]["prompt_only"]
    assert few_shot["usage"]["input_tokens"]["mean"] > comparison["strategies"]["zero_shot"]["usage"]["input_tokens"]["mean"]
    # the calibrated few-shot arm must not collapse onto one label (the failure mode of an unfair prompt arm)
    outputs = Counter(json.loads(line)["output"]
                      for line in (out / "prompt_only" / "predictions.jsonl").read_text().splitlines())
    assert len(outputs) >= 5 and outputs.most_common(1)[0][1] <= 20
    assert "prompt_only" in r.stdout and "accuracy" in r.stdout

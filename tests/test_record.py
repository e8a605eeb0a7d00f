"""The decision record (`harness record RUN_DIR`): a real run on the tiny model of a task that declares slices, the
per-slice table recomputed from the predictions, the review date; the `slices:` field of task.yaml."""

from __future__ import annotations

import json
from datetime import date

import pytest
import yaml

from harness.errors import TaskError
from harness.record import add_months
from harness.task import load_task
from tests.conftest import ROOT
from tests.test_sweep import TINY, _model, harness


def _with_slices(task_dir):
    """The tiny task with a `channel` slice on every held-out example."""
    spec = yaml.safe_load((task_dir / "task.yaml").read_text())
    (task_dir / "task.yaml").write_text(yaml.safe_dump({**spec, "slices": ["channel"]}))
    lines = [json.loads(x) for x in (task_dir / "heldout.jsonl").read_text().splitlines()]
    for i, rec in enumerate(lines):
        rec["channel"] = "email" if i % 3 else "chat"
    (task_dir / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return {r["id"]: r["channel"] for r in lines}


def test_decision_record_of_a_run_with_slices(tiny_model, task_dir, tmp_path):
    channels = _with_slices(task_dir)
    out = tmp_path / "run"
    r = harness(*TINY, f"task_dir={task_dir}", f"results_dir={out}", "strategies=[zero_shot,prompt_only]",
                "strategies.prompt_only.shots=4", "decision.review_after_months=3", *_model(tiny_model, tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = harness("record", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    rec = json.loads((out / "decision_record.json").read_text())
    run = json.loads((out / "run.json").read_text())
    comparison = json.loads((out / "comparison.json").read_text())
    assert rec["verdict"]["choice"] == comparison["decision"]["verdict"]["choice"]
    assert rec["review_by"] == add_months(date.fromisoformat(run["created"][:10]), 3).isoformat()
    assert rec["data"]["hashes_sha256"] == run["data_hashes"] and rec["task"]["primary_metric"] == "accuracy"
    assert {a["arm"] for a in rec["arms"]} == {"zero_shot", "prompt_only"}
    for arm in rec["arms"]:
        assert arm["primary"]["ci"] == comparison["decision"]["intervals"][arm["arm"]]["accuracy"]["ci"]
    for arm in ("zero_shot", "prompt_only"):  # each slice's accuracy, recomputed from the arm's predictions
        preds = [json.loads(x) for x in (out / arm / "predictions.jsonl").read_text().splitlines()]
        gold = {json.loads(x)["id"]: json.loads(x)["target"] for x in (task_dir / "heldout.jsonl").read_text().splitlines()}
        for channel in ("chat", "email"):
            hits = [p["output"] == gold[p["id"]] for p in preds if channels[p["id"]] == channel]
            point = rec["slices"]["channel"][channel][arm]
            assert point["n"] == len(hits) and point["value"] == pytest.approx(sum(hits) / len(hits))
            assert point["ci"][0] <= point["value"] <= point["ci"][1]
    md = (out / "decision_record.md").read_text()
    assert "accuracy per `channel` slice" in md and f"review by {rec['review_by']}" in md
    assert f"harness compare {out}" in md
    r = harness("record", str(out), "--review-after-months", "12")
    assert json.loads((out / "decision_record.json").read_text())["review_after_months"] == 12


def test_slices_are_declared_in_task_yaml_and_every_heldout_example_has_one(task_dir):
    assert load_task(ROOT / "tasks" / "supplier_intake").slices == ("currency_group",)
    assert {ex.meta["currency_group"] for ex in load_task(ROOT / "tasks" / "supplier_intake").heldout} == \
        {"GBP", "foreign", "not stated"}
    _with_slices(task_dir)
    lines = (task_dir / "heldout.jsonl").read_text().splitlines()
    rec = json.loads(lines[2])
    del rec["channel"]
    lines[2] = json.dumps(rec)
    (task_dir / "heldout.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(TaskError) as e:
        load_task(task_dir)
    assert str(e.value).startswith(f"{task_dir / 'heldout.jsonl'}:3: field 'channel': missing slice value")
    spec = yaml.safe_load((task_dir / "task.yaml").read_text())
    (task_dir / "task.yaml").write_text(yaml.safe_dump({**spec, "slices": "channel"}))
    with pytest.raises(TaskError, match="field 'slices': must be a list"):
        load_task(task_dir)


def test_review_date_adds_calendar_months():
    assert add_months(date(2026, 11, 30), 3) == date(2027, 2, 28)
    assert add_months(date(2026, 1, 15), 12) == date(2027, 1, 15)

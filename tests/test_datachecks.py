"""Data checks (overlap, balance, personal data) and the forgetting check's scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness import datachecks, forgetting
from harness.lm import ChoiceScores, SCORE
from harness.task import load_task


@pytest.mark.parametrize("text,kinds", [
    ("write to jo.bloggs@example.co.uk today", {"email": 1}),
    ("call me on +44 20 7946 0958", {"phone": 1}),
    ("phone (415) 555-0142 please", {"phone": 1}),
    ("card 4111 1111 1111 1111 expires soon", {"card_number": 1}),
    ("IBAN GB29 NWBK 6016 1331 9268 19", {"iban": 1}),
    ("sort code 12-34-56, account 12345678", {"sort_code": 1}),
    ("card 4111 1111 1111 1112 (fails Luhn)", {}),
    ("order NW-2024-118830 shipped 2024-05-01 for $1,299.00", {}),
    ("ticket #88231, call 555-0142", {}),
    ("order 2211-40915 was never delivered", {}),
    ("ring 0712 345 678 after six", {"phone": 1}),
])
def test_pii_patterns(text, kinds):
    assert dict(datachecks.pii_kinds(text)) == kinds


def test_checks_report_overlap_balance_and_pii_by_id_only(task_dir):
    train = [json.loads(line) for line in (task_dir / "train.jsonl").read_text().splitlines()]
    held = [json.loads(line) for line in (task_dir / "heldout.jsonl").read_text().splitlines()]
    train[0]["input"] = train[0]["input"] + " Reach me at pat.doe@example.com."
    held[0]["input"] = train[1]["input"].upper() + "  "          # the same input after normalisation
    held[1]["input"] = train[2]["input"] + " thanks"             # nearly the same
    (task_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (task_dir / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    task = load_task(task_dir, allow_overlap=True)

    shared = {}

    def shared_encode(texts):  # one vocabulary across calls, so vectors of different calls compare
        out = np.zeros((len(texts), 2048), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().replace(".", " ").replace(",", " ").split():
                out[i, shared.setdefault(w, len(shared) % 2048)] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    result = datachecks.run_checks(task, shared_encode, 0.9)
    exact = result["overlap"]["train"]["exact"]
    near = result["overlap"]["train"]["near"]
    assert exact == [{"heldout": held[0]["id"], "other": train[1]["id"]}]
    assert {"heldout": held[1]["id"], "other": train[2]["id"]} in [{k: n[k] for k in ("heldout", "other")} for n in near]
    assert held[0]["id"] not in [n["heldout"] for n in near]   # counted once, as exact
    assert result["pii"] == {"counts": {"email": 1}, "examples": [{"id": train[0]["id"], "kinds": ["email"]}]}
    assert "pat.doe" not in json.dumps(result)
    balance = result["label_balance"]
    assert sum(balance["train"].values()) == len(task.train) and balance["imbalance_ratio"] >= 1
    assert datachecks.run_checks(task, None, 0.9)["overlap"]["train"]["near"] == []


class FakeLM:
    """Scores a choice by how many of its characters are vowels: a deterministic stand-in for log-likelihoods."""

    capabilities = frozenset({SCORE})

    def render(self, messages):
        return "\n".join(m["content"] for m in messages)

    def score_choices(self, prompts, choices):
        return [ChoiceScores([float(sum(ch in "aeiou" for ch in c) - len(c)) for c in choices], 1, 1, 0.0)
                for _ in prompts]


def test_general_control_set_is_well_formed_and_scored_by_normalised_likelihood():
    items = forgetting.read_general()
    assert len(items) >= 100 and len({i["id"] for i in items}) == len(items)
    assert all(len(i["choices"]) == 4 and i["answer"] in i["choices"] for i in items)
    scores = forgetting.score_multiple_choice(FakeLM(), items[:20])
    expected = [float(max(i["choices"], key=lambda c: (sum(ch in "aeiou" for ch in c) - len(c)) / len(c))
                      == i["answer"]) for i in items[:20]]
    assert scores == expected


def test_control_set_choice(task_dir):
    task = load_task(task_dir)
    assert forgetting.load_control(task, "none") is None
    general = forgetting.load_control(task, "auto", limit=5)
    assert general.name.startswith("general") and len(general.ids) == 5
    with pytest.raises(Exception, match="no control split"):
        forgetting.load_control(task, "task")
    (task_dir / "control.jsonl").write_text((task_dir / "heldout.jsonl").read_text())
    own = forgetting.load_control(load_task(task_dir), "auto")
    assert own.name == "task control split" or own.name.endswith("control split")


def test_held_out_answers_that_are_training_answers_are_found_case_and_spacing_aside(tmp_path):
    folder = tmp_path / "faq"
    folder.mkdir()
    (folder / "task.yaml").write_text("name: faq\ntype: generation\ninstruction: Answer.\n")
    train = [{"id": "t1", "input": "How long is leave?", "target": "Leave is 27 days a year."},
             {"id": "t2", "input": "Who signs it off?", "target": "Your line manager."}]
    held = [{"id": "h1", "input": "How many leave days?", "target": "leave is 27  days a YEAR."},  # t1's answer
            {"id": "h2", "input": "Where do I book it?", "target": "In the Lantern portal."},     # new
            {"id": "h3", "input": "Who approves leave?", "target": "Your line manager"}]          # not word for word
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (folder / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    result = datachecks.run_checks(load_task(folder), None, 0.95)
    assert result["answers_in_train"] == {"n": 1, "of": 3, "ids": ["h1"]}


def test_answers_in_train_is_asked_of_generation_tasks_only(task_dir):
    assert datachecks.run_checks(load_task(task_dir), None, 0.95)["answers_in_train"] is None

import pytest

from harness.kinds.classification import parse_label, score_labels
from harness.kinds.extraction import parse_json_object, score_fields
from harness.kinds.generation import score_texts


def test_classification_metrics_by_hand():
    labels = ["a", "b", "c"]
    targets = ["a", "a", "b", "b", "c", "c"]
    outputs = ["a", "b", "b", "b", "garbage", "a"]
    r = score_labels(labels, targets, outputs)
    m = r["metrics"]
    assert m["accuracy"] == pytest.approx(3 / 6)
    # per-label F1: a: tp1 fp1 fn1 → 0.5; b: tp2 fp1 fn0 → 0.8; c: tp0 → 0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m["invalid_rate"] == pytest.approx(1 / 6)
    conf = r["details"]["confusion"]
    assert conf["columns"] == ["a", "b", "c", "(invalid)"]
    assert conf["counts"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 1]]
    assert [e["correct"] for e in r["per_example"]] == [1, 0, 1, 1, 0, 0]


def test_parse_label_is_tolerant_but_never_invents():
    labels = ["billing", "refunds", "card_arrival"]
    assert parse_label("Billing.", labels) == "billing"
    assert parse_label("The queue is: refunds", labels) == "refunds"
    assert parse_label("card arrival", labels) == "card_arrival"
    assert parse_label("refunds, then billing", labels) == "refunds"
    assert parse_label("no idea", labels) is None
    assert parse_label("Arrival", ["arrival time"], {"arrival time": "Arrival"}) == "arrival time"


def test_tolerant_json_parsing():
    assert parse_json_object('Sure!\n```json\n{"a": 1, "b": "x",}\n```') == {"a": 1, "b": "x"}
    assert parse_json_object('prefix {"a": "}"} suffix') == {"a": "}"}
    assert parse_json_object("not json at all") is None
    assert parse_json_object('{"a": [1, 2}') is None


def test_extraction_metrics_by_hand():
    fields = ["name", "amount", "date"]
    targets = [{"name": "ACME", "amount": "12", "date": None}, {"name": "Bo", "amount": "5", "date": "2024-01-02"}]
    outputs = ['{"name": "acme ", "amount": "12", "date": null}', 'I think {"name": "Bo", "amount": "7"']
    r = score_fields(fields, targets, outputs)
    m = r["metrics"]
    # ex1: all three fields match (name case/space-insensitive). ex2: invalid JSON → nothing predicted.
    assert m["valid_json_rate"] == 0.5 and m["record_exact_match"] == 0.5
    assert m["field_accuracy"] == pytest.approx((3 / 3 + 0 / 3) / 2)
    # micro: tp=2 (name, amount of ex1), fp=0, fn=3 (ex2's three gold values)
    assert m["field_f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 3))


def test_generation_metrics():
    r = score_texts(["The cat sat", ("Paris", "paris, France")], ["the cat sat!", "It is Paris"])
    assert r["per_example"][0] == {"exact_match": 1, "token_f1": 1.0}
    assert r["per_example"][1]["exact_match"] == 0
    assert r["per_example"][1]["token_f1"] == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))

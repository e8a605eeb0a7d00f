import json

import pytest

from harness.errors import TaskError
from harness.task import load_task
from tests.conftest import ROOT


def test_loads_tiny_task_into_frozen_objects():
    task = load_task(ROOT / "tasks" / "tiny")
    assert task.type == "classification" and task.labels == ("positive", "negative")
    assert len(task.train) == 20 and len(task.heldout) == 12
    with pytest.raises(Exception):
        task.train[0].input = "changed"  # frozen
    assert set(task.data_hashes) == {"train", "heldout"}


def test_column_mapping_and_label_descriptions():
    task = load_task(ROOT / "tasks" / "support_triage", limit_train=5, limit_heldout=3)
    assert len(task.train) == 5 and len(task.heldout) == 3
    assert task.heldout[0].id == "th-0001" and task.heldout[0].target in task.labels
    assert "refund" in task.label_descriptions["refunds"]


def test_csv_split_with_other_column_names(task_dir):
    (task_dir / "heldout.jsonl").unlink()
    (task_dir / "heldout.csv").write_text('ticket_id,body,sentiment\nc1,"Awful, never again",negative\n'
                                          'c2,Lovely thing,positive\n', encoding="utf-8")
    (task_dir / "train.jsonl").write_text(
        "".join(json.dumps({"ticket_id": f"t{i}", "body": f"text {i}", "sentiment": "positive"}) + "\n"
                for i in range(3)), encoding="utf-8")
    (task_dir / "task.yaml").write_text((task_dir / "task.yaml").read_text() +
                                        "columns: {id: ticket_id, input: body, target: sentiment}\n")
    task = load_task(task_dir)
    assert [ex.id for ex in task.heldout] == ["c1", "c2"] and task.heldout[0].input == "Awful, never again"


def _break(task_dir, split, line_no, text):
    path = task_dir / f"{split}.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[line_no - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("text, expected", [
    ('{"id": "x", "input": "oops"', "heldout.jsonl:3: not valid JSON"),
    ('{"id": "x", "target": "positive"}', "heldout.jsonl:3: field 'input': missing or empty input"),
    ('{"id": "x", "input": "fine"}', "heldout.jsonl:3: field 'target': missing target"),
    ('{"id": "x", "input": "fine", "target": "neutral"}', "heldout.jsonl:3: field 'target': label 'neutral' is not"),
    ('{"id": "ho00", "input": "fine", "target": "positive"}', "heldout.jsonl:3: field 'id': duplicate id 'ho00'"),
    ('["not", "an", "object"]', "heldout.jsonl:3: expected a JSON object"),
])
def test_bad_lines_name_file_line_and_field(task_dir, text, expected):
    _break(task_dir, "heldout", 3, text)
    with pytest.raises(TaskError) as err:
        load_task(task_dir)
    message = str(err.value)
    assert expected in message and "\n" not in message


def test_empty_split(task_dir):
    (task_dir / "heldout.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(TaskError, match=r"heldout.jsonl: split 'heldout' is empty"):
        load_task(task_dir)


def test_non_utf8_file(task_dir):
    path = task_dir / "train.jsonl"
    path.write_bytes(path.read_bytes() + b'{"id": "z", "input": "caf\xe9", "target": "positive"}\n')
    with pytest.raises(TaskError, match=r"train.jsonl:21: not valid UTF-8 \(byte 0xe9\)"):
        load_task(task_dir)


def test_heldout_identical_to_train_is_an_error_unless_allowed(task_dir):
    train_first = json.loads((task_dir / "train.jsonl").read_text().splitlines()[0])
    _break(task_dir, "heldout", 2, json.dumps({"id": "leak", "input": "  " + train_first["input"].upper(),
                                               "target": train_first["target"]}))
    with pytest.raises(TaskError, match=r"heldout.jsonl:2: field 'input': 1 held-out example\(s\) have the same input"):
        load_task(task_dir)
    task = load_task(task_dir, allow_overlap=True)
    assert task.overlap == (("leak", train_first["id"]),)


def test_missing_required_split_and_bad_task_yaml(task_dir):
    (task_dir / "train.jsonl").unlink()
    with pytest.raises(TaskError, match="required split 'train' not found"):
        load_task(task_dir)
    (task_dir / "task.yaml").write_text("type: classification\ninstruction: x\nlabels: [a, b]\ncolour: red\n")
    with pytest.raises(TaskError, match=r"task.yaml: field 'colour': unknown key"):
        load_task(task_dir)
    (task_dir / "task.yaml").write_text("type: regression\ninstruction: x\n")
    with pytest.raises(TaskError, match=r"field 'type': must be one of"):
        load_task(task_dir)


def test_extraction_and_generation_targets(tmp_path):
    (tmp_path / "task.yaml").write_text("type: extraction\ninstruction: Extract.\nfields: [name, amount]\n")
    row = {"id": "a", "input": "Bill from ACME for 12 EUR", "target": {"name": "ACME", "amount": "12"}}
    (tmp_path / "train.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "heldout.jsonl").write_text(json.dumps({**row, "id": "b", "input": "other",
                                                        "target": {"name": "X"}}) + "\n")
    task = load_task(tmp_path)
    assert dict(task.heldout[0].target) == {"name": "X", "amount": None}
    (tmp_path / "heldout.jsonl").write_text(json.dumps({**row, "id": "b", "input": "o", "target": {"nme": "X"}}))
    with pytest.raises(TaskError, match=r"heldout.jsonl:1: field 'target': key 'nme' is not one of the task's fields"):
        load_task(tmp_path)

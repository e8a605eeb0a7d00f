import json

from harness.results import PredictionLog, write_json


def test_prediction_log_recovers_from_a_torn_line_and_never_duplicates(tmp_path):
    path = tmp_path / "predictions.jsonl"
    log = PredictionLog(path)
    log.append([{"id": "a", "output": "x"}, {"id": "b", "output": "y"}])
    with open(path, "ab") as f:
        f.write(b'{"id": "c", "outp')  # kill -9 in the middle of a write
    log = PredictionLog(path)
    assert log.done() == {"a", "b"}
    log.append([{"id": "b", "output": "again"}, {"id": "c", "output": "z"}])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in lines] == ["a", "b", "c"] and lines[1]["output"] == "y"


def test_write_json_is_atomic(tmp_path):
    write_json(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]

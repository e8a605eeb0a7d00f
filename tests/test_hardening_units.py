"""Hardening, fast parts (no model): phone numbers found and redacted, labels as written, inputs bounded, ids in
train and held-out, the API key kept out of what a server echoes, atomic writes."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import datachecks
from harness.lm.http import HTTPChatLM
from harness.results import write_bytes
from harness.task import load_task

UK_MOBILES = ("07700 900123", "+44 7700 900456", "07700900789")


@pytest.mark.parametrize("number", UK_MOBILES)
def test_uk_mobile_shapes_are_found_and_redacted(number):
    text = f"Please ring me back on {number} before five."
    assert dict(datachecks.pii_kinds(text)) == {"phone": 1}
    redacted, n = datachecks.redact(text)
    assert n == 1 and redacted == "Please ring me back on [phone] before five."


def test_redact_keeps_text_without_personal_data_and_replaces_each_kind():
    plain = "order 2211-40915 shipped 2024-05-01 for $1,299.00"
    assert datachecks.redact(plain) == (plain, 0)
    text = "mail jo.bloggs@example.co.uk or 07700 900123; card 4111 1111 1111 1111"
    redacted, n = datachecks.redact(text)
    assert n == 3 and redacted == "mail [email] or [phone]; card [card_number]"


def _task(tmp_path, yaml_text, train, heldout):
    folder = tmp_path / "t"
    folder.mkdir(exist_ok=True)
    (folder / "task.yaml").write_text(yaml_text)
    for name, rows in (("train", train), ("heldout", heldout)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_yaml_boolean_words_are_labels_as_written(tmp_path):
    rows = [{"id": f"a{i}", "input": f"text {i}", "target": t} for i, t in enumerate(["yes", "no", "on", "off"])]
    held = [{"id": "h1", "input": "other", "target": "no"}]
    folder = _task(tmp_path, "type: classification\ninstruction: Agree?\nlabels: [yes, no, on, off]\n", rows, held)
    assert load_task(folder).labels == ("yes", "no", "on", "off")
    folder = _task(tmp_path, "type: classification\ninstruction: Agree?\nlabels:\n  yes: agrees\n  no: disagrees\n"
                   "  on: switched on\n  off: switched off\n", rows, held)
    task = load_task(folder)
    assert task.labels == ("yes", "no", "on", "off") and task.label_descriptions["no"] == "disagrees"


def test_oversized_inputs_are_cut_at_load_and_counted(tmp_path):
    huge = "word " * 40_000  # 200,000 characters
    rows = [{"id": "t1", "input": "short", "target": "a"}, {"id": "t2", "input": huge, "target": "b"}]
    held = [{"id": "h1", "input": huge + "end", "target": "a"}, {"id": "h2", "input": "fine", "target": "b"}]
    folder = _task(tmp_path, "type: classification\ninstruction: Which?\nlabels: [a, b]\nallow_overlap: true\n",
                   rows, held)
    task = load_task(folder, max_input_chars=1000)
    assert task.cut_inputs == ("t2", "h1") and task.max_input_chars == 1000
    cut = task.heldout[0].input
    assert len(cut) <= 1000 and cut.startswith("word word") and cut.endswith("end")
    assert task.heldout[1].input == "fine" and task.train[0].input == "short"
    assert load_task(folder).cut_inputs == ()  # no limit: nothing cut


def test_the_same_id_in_train_and_heldout_is_collected(tmp_path):
    rows = [{"id": "x1", "input": "one", "target": "a"}, {"id": "x2", "input": "two", "target": "b"}]
    held = [{"id": "x2", "input": "three", "target": "b"}, {"id": "h", "input": "four", "target": "a"}]
    task = load_task(_task(tmp_path, "type: classification\ninstruction: Which?\nlabels: [a, b]\n", rows, held))
    assert task.shared_ids == ("x2",)


class _Echo(BaseHTTPRequestHandler):
    """A server that echoes the request's Authorization header: in a 400 error body, or in the answer."""

    def log_message(self, *args):
        pass

    def _send(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200, {"data": []})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        auth = self.headers.get("Authorization", "")
        if "fail" in body["messages"][-1]["content"]:
            self._send(400, {"error": {"message": f"bad request, you sent {auth}"}})
        else:
            self._send(200, {"choices": [{"message": {"content": f"echo {auth}"}}],
                             "usage": {"prompt_tokens": 3, "completion_tokens": 2}})


def test_an_echoed_api_key_is_never_kept(tmp_path, monkeypatch, capsys):
    key = "sk-live-4f9a8b7c6d5e"
    monkeypatch.setenv("ECHO_KEY", key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        lm = HTTPChatLM(f"http://127.0.0.1:{server.server_address[1]}/v1", "m", api_key_env="ECHO_KEY",
                        cache_path=str(tmp_path / "cache"), max_retries=0)
        gens = lm.generate([lm.render([{"role": "user", "content": c}]) for c in ("please fail", "hello")], 8)
    finally:
        server.shutdown()
    failed, answered = gens
    assert failed.error.startswith("HTTP 400: bad request") and "[REDACTED]" in failed.error
    assert answered.text == "echo Bearer [REDACTED]"
    kept = json.dumps([g.__dict__ for g in gens]) + "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert key not in kept and key not in "".join(capsys.readouterr())


def test_write_bytes_leaves_the_old_file_whole_when_writing_fails(tmp_path):
    path = tmp_path / "figure.png"
    write_bytes(path, b"old picture")
    with pytest.raises(TypeError):
        write_bytes(path, "not bytes")  # fails inside the write
    assert path.read_bytes() == b"old picture" and [p.name for p in tmp_path.iterdir()] == ["figure.png"]


def test_a_prompt_near_the_context_length_is_never_batched_with_shorter_ones():
    from types import SimpleNamespace

    from harness.lm.hf import TransformersLM

    lm = SimpleNamespace(batch_size=3, max_length=100)
    batches = list(TransformersLM._batches(lm, [10, 95, 12, 60, 11, 9, 30]))
    assert batches == [[1], [3], [6, 2, 4], [0, 5]]  # 95 and 60 > half the context: alone; the rest by length

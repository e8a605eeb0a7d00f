"""Hardening, end to end on the tiny model: a hostile task (script payloads in its name and labels, personal data
in every training example, a 200,000-character input, an id in both train and held-out), two runs into one
folder, a full disk, and the bad inputs that must each be one line."""

from __future__ import annotations

import json
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, run_harness

PAYLOADS = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")
PLANTED = ("07700 900123", "+44 7700 900456", "07700900789", "pat.doe@example.com")
RAW_TAG = re.compile(r"<script|<img src=x|<b>bad", re.I)


def _model(tiny_model):
    return ["model=hf", f"model.name_or_path={tiny_model}"]


def _hostile_task(folder):
    folder.mkdir()
    (folder / "task.yaml").write_text(
        f"name: '{PAYLOADS[0]}'\ntype: classification\ninstruction: Is the review positive or negative?\n"
        f"labels: ['{PAYLOADS[1]}', '<b>bad</b>']\n")
    labels = {"positive": PAYLOADS[1], "negative": "<b>bad</b>"}
    for split in ("train", "heldout"):
        rows = [json.loads(x) for x in (ROOT / "tasks" / "tiny" / f"{split}.jsonl").read_text().splitlines()]
        for i, r in enumerate(rows):
            r["target"] = labels[r["target"]]
            if split == "train":  # every demonstration carries a planted value
                r["input"] += f" Call {PLANTED[i % 3]} or write to {PLANTED[3]}."
        if split == "heldout":
            rows[0]["input"] = "word " * 40_000  # 200,000 characters
            rows[1]["id"] = "tr03"               # also a train id
            rows[2]["input"] += f" My number is {PLANTED[0]}."
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def hostile(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    task, out = _hostile_task(base / "task"), base / "run"
    measure = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
               "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "harness.cli", f"task_dir={task}",
                        f"results_dir={out}", "strategies=[zero_shot,prompt_only]", "strategies.prompt_only.shots=4",
                        *_model(tiny_model)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    return r, out, time.perf_counter() - start


def test_reports_carry_no_raw_tag_from_task_labels_or_errors(hostile, tmp_path):
    r, out, _ = hostile
    assert r.returncode == 0, r.stdout + r.stderr
    html, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and md.startswith("# &lt;script&gt;")
    assert not RAW_TAG.search(html) and not RAW_TAG.search(md)
    copy = tmp_path / "copy"  # error texts and verdict reasons are shown too: payloads there, re-rendered
    shutil.copytree(out, copy)
    comparison = json.loads((copy / "comparison.json").read_text())
    comparison["strategies"]["broken"] = {"error": f"RuntimeError: model said {PAYLOADS[1]}"}
    comparison["decision"]["verdict"]["reasons"].append(PAYLOADS[0])
    comparison["model"]["name_or_path"] = PAYLOADS[1]
    (copy / "comparison.json").write_text(json.dumps(comparison))
    from harness.report.render import write_reports

    paths = write_reports(copy)
    for path in paths.values():
        text = path.read_text()
        assert "model said &lt;img" in text and not RAW_TAG.search(text)


def test_no_planted_personal_value_anywhere_in_the_results(hostile):
    r, out, _ = hostile
    assert r.returncode == 0, r.stdout + r.stderr
    checks = json.loads((out / "data_checks.json").read_text())
    assert checks["pii"]["counts"] == {"email": 20, "phone": 20}  # the three UK shapes, each found
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for value in PLANTED:
                assert value.encode() not in data, f"{value} in {path}"
    records = [json.loads(x) for x in (out / "prompt_only" / "predictions.jsonl").read_text().splitlines()]
    assert all(rec["prompt_redacted"] >= 8 for rec in records)  # 4 demonstrations, a phone and an email each
    assert "[phone]" in records[0]["prompt"] and "[email]" in records[0]["prompt"]


def test_a_huge_input_is_cut_with_one_counted_warning_in_bounded_time_and_memory(hostile):
    r, out, seconds = hostile
    assert r.returncode == 0, r.stdout + r.stderr
    warnings = [x for x in r.stdout.splitlines() if "longer than 20,000 characters" in x]
    assert len(warnings) == 1 and "1 input(s)" in warnings[0]
    assert json.loads((out / "run.json").read_text())["inputs_cut"] == {"limit_chars": 20000, "ids": ["ho00"]}
    for arm in ("zero_shot", "prompt_only"):
        lines = (out / arm / "predictions.jsonl").read_text().splitlines()
        records = {json.loads(x)["id"]: json.loads(x) for x in lines}
        assert len(records) == 12 and len(records["ho00"]["prompt"]) < 25_000
    rss_gb = int(re.search(r"MAXRSS_KB (\d+)", r.stdout).group(1)) / 1024 ** 2
    assert seconds < 240 and rss_gb < 3.0, (seconds, rss_gb)


def test_an_id_in_train_and_heldout_is_counted_and_warned(hostile):
    r, out, _ = hostile
    warnings = [x for x in r.stdout.splitlines() if "appear in both train and held-out" in x]
    assert len(warnings) == 1 and "1 id(s) appear in both train and held-out (first: 'tr03')" in warnings[0]
    assert json.loads((out / "run.json").read_text())["ids_in_train_and_heldout"] == ["tr03"]


def test_two_runs_into_one_folder_one_is_refused_naming_the_holder(tiny_model, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "harness.cli", "task=tiny", f"results_dir={out}", "strategies=[zero_shot]",
            "write_every=2", "model.batch_size=1", "checks.near_duplicates=false", *_model(tiny_model)]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outputs
    refused = next(o for p, o in zip(procs, outputs) if p.returncode == 2)
    holder = next(p for p in procs if p.returncode == 0)
    errors = [x for x in refused.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and f"is in use by pid {holder.pid}" in errors[0] and "Traceback" not in refused
    ids = [json.loads(x)["id"] for x in (out / "zero_shot" / "predictions.jsonl").read_text().splitlines()]
    assert len(ids) == 12 == len(set(ids))


def _one_line(r):
    lines = [x for x in r.stdout.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    return lines[0]


def test_tracebacks_become_one_line_and_refused_runs_leave_no_folder(tiny_model, tmp_path, task_dir):
    out = tmp_path / "run"
    base = ("task=tiny", f"results_dir={out}", "strategies=[zero_shot]", *_model(tiny_model))
    r = run_harness(*base, "seed=abc")
    assert r.returncode == 2 and "field 'seed'" in _one_line(r)
    r = run_harness(*base, "+strategies.zero_shot.seeds=[abc]")
    assert r.returncode == 2 and "field 'strategies.zero_shot.seeds'" in _one_line(r)
    r = run_harness("task=tiny", f"results_dir={out}", "strategies=[zero_shot,no_such_arm]", *_model(tiny_model))
    line = _one_line(r)
    assert r.returncode == 2 and "unknown strategy 'no_such_arm'" in line and "prompt_only, " in line
    afile = tmp_path / "afile"
    afile.write_text("x")
    for target in (afile, afile / "below"):
        r = run_harness("task=tiny", f"results_dir={target}", "strategies=[zero_shot]", *_model(tiny_model))
        assert r.returncode == 2 and "is a file, not a folder" in _one_line(r)
    escape = ROOT.parent / f"escaped-{tmp_path.name}"
    try:
        r = run_harness(f"task=../../{escape.name}", "strategies=[zero_shot]", *_model(tiny_model))
        assert r.returncode == 2 and "field 'task'" in _one_line(r)
        assert not escape.exists()  # Hydra made results/../../NAME/... before the task was checked
    finally:
        shutil.rmtree(escape, ignore_errors=True)
    (task_dir / "heldout.jsonl").write_text('{"id": "a", "input": "x", "target": "meh"}\n')
    r = run_harness(f"task_dir={task_dir}", f"results_dir={out}", *_model(tiny_model))
    assert r.returncode == 2 and "label 'meh'" in _one_line(r)
    assert not out.exists()  # a refused run leaves no folder (Hydra's .hydra included)


def _limited(max_bytes):
    def apply():  # writes past max_bytes fail with EFBIG, as on a full disk (the signal ignored)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def test_a_full_disk_during_a_run_or_a_report_is_one_line_and_tears_nothing(hostile, tiny_model, tmp_path):
    _, done, _ = hostile
    copy = tmp_path / "copy"
    shutil.copytree(done, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    r = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(copy)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, preexec_fn=_limited(20_000))
    assert r.returncode != 0 and "File too large" in _one_line(r)
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()} == before  # old files whole, no temp
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "harness.cli", "task=tiny", f"results_dir={out}",  # predictions: ~15 kB
                        "strategies=[prompt_only]", "strategies.prompt_only.shots=8", "checks.near_duplicates=false",
                        *_model(tiny_model)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       preexec_fn=_limited(8_000))
    assert r.returncode == 1 and "File too large" in _one_line(r)
    assert (out / "run.json").is_file()  # what was written before is kept

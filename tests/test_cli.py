"""The `harness` command end to end on the tiny random model: contract, resume, kill -9, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, run_harness


def _model(tiny_model):
    return ["model=hf", f"model.name_or_path={tiny_model}"]


def _files(run_dir):
    """Everything a rerun must reproduce: ids, outputs and prompts in file order, and the metrics (timings and
    last-digit score noise from a different batch composition aside)."""
    files = {}
    for p in sorted(run_dir.rglob("*")):
        name = p.relative_to(run_dir).as_posix()
        if p.name == "predictions.jsonl":
            files[name] = [(r["id"], r["output"], r["prompt"]) for r in map(json.loads, p.read_text().splitlines())]
        elif p.name == "metrics.json":
            files[name] = json.loads(p.read_text())
    return files


def test_run_writes_the_comparison_contract(tiny_model, tmp_path):
    out = tmp_path / "run"
    r = run_harness("task=tiny", f"results_dir={out}", "strategies=[zero_shot,prompt_only]",
                    "strategies.prompt_only.shots=4", "limit.heldout=8", *_model(tiny_model))
    assert r.returncode == 0, r.stdout + r.stderr
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["task"] == "tiny" and comparison["primary_metric"] == "accuracy"
    for name in ("zero_shot", "prompt_only"):
        entry = comparison["strategies"][name]
        assert entry["n"] == 8 and 0 <= entry["metrics"]["accuracy"] <= 1
        assert entry["usage"]["input_tokens"]["mean"] > 0
        lines = (out / name / "predictions.jsonl").read_text().splitlines()
        assert len(lines) == 8 and len({json.loads(x)["id"] for x in lines}) == 8
        for f in ("prepare.json", "metrics.json", "usage.json"):
            assert (out / name / f).is_file()
    run = json.loads((out / "run.json").read_text())
    assert set(run["data_hashes"]) == {"train", "heldout"} and run["seed"] == 0 and "torch" in run["packages"]
    assert (out / ".hydra" / "config.yaml").is_file()
    assert "prompt_only" in r.stdout and "accuracy" in r.stdout  # the rich table


def test_rerun_skips_finished_ids_and_torn_lines_are_redone(tiny_model, tmp_path):
    out = tmp_path / "run"
    args = ("task=tiny", f"results_dir={out}", "strategies=[prompt_only]", "strategies.prompt_only.shots=2",
            *_model(tiny_model))
    assert run_harness(*args).returncode == 0
    before = _files(out)
    preds = out / "prompt_only" / "predictions.jsonl"
    lines = preds.read_text().splitlines(keepends=True)
    preds.write_text("".join(lines[:5]) + lines[5][:20])  # as if killed mid-write
    r = run_harness(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _files(out) == before


def test_kill_minus_9_then_rerun_gives_the_same_files(tiny_model, tmp_path):
    base = ("task=support_triage", "strategies=[zero_shot]", "write_every=2", "model.batch_size=1",
            "limit.heldout=60", *_model(tiny_model))
    clean = tmp_path / "clean"
    assert run_harness(*base, f"results_dir={clean}").returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *base, f"results_dir={out}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    preds = out / "zero_shot" / "predictions.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not preds.exists() or len(preds.read_text().splitlines()) < 4):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(preds.read_text().splitlines())
    assert 4 <= partial < 60
    assert run_harness(*base, f"results_dir={out}").returncode == 0
    assert _files(out) == _files(clean)


def test_changed_config_in_the_same_results_dir_is_refused(tiny_model, tmp_path):
    out = tmp_path / "run"
    assert run_harness("task=tiny", f"results_dir={out}", "strategies=[zero_shot]", *_model(tiny_model)).returncode == 0
    r = run_harness("task=tiny", f"results_dir={out}", "strategies=[zero_shot]", "strategies.zero_shot.shots=3",
                    *_model(tiny_model))
    assert r.returncode == 2 and "holds results of a different configuration" in r.stdout


def _one_line_error(r):
    lines = [x for x in r.stdout.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    return lines[0]


def test_bad_input_gets_one_line_errors(tiny_model, tmp_path, task_dir):
    r = run_harness("task=nope", *_model(tiny_model))
    assert r.returncode == 2 and "unknown task 'nope'" in _one_line_error(r) and "tiny" in r.stdout
    r = run_harness("task=tiny", "limit.heldout=abc", *_model(tiny_model))
    assert r.returncode == 2 and "limit.heldout" in _one_line_error(r)
    r = run_harness("task=tiny", "limit.heldout=-3", *_model(tiny_model))
    assert r.returncode == 2 and "limit.heldout" in _one_line_error(r)
    (task_dir / "heldout.jsonl").write_text('{"id": "a", "input": "x", "target": "meh"}\n')
    r = run_harness(f"task_dir={task_dir}", f"results_dir={tmp_path / 'x'}", *_model(tiny_model))
    assert r.returncode == 2 and "heldout.jsonl:1: field 'target': label 'meh'" in _one_line_error(r)
    r = run_harness("task=tiny", "strategies=[no_such_strategy]", *_model(tiny_model))
    assert r.returncode == 2 and "unknown strategy 'no_such_strategy'" in _one_line_error(r)
    r = run_harness("task=tiny", "strategies=[zero_shot]", "+strategies.zero_shot.bogus=1", *_model(tiny_model))
    assert r.returncode == 2 and "unexpected keyword argument 'bogus'" in _one_line_error(r)
    r = run_harness("task=tiny", "model=hf", f"model.name_or_path={tmp_path / 'missing'}")
    assert r.returncode == 2 and "cannot load model" in _one_line_error(r)


def test_failing_strategy_is_recorded_and_the_others_still_run(tiny_model, tmp_path):
    out = tmp_path / "run"
    # a template that refers to an unknown variable fails at predict time for that arm only
    r = run_harness("task=tiny", f"results_dir={out}", "strategies=[zero_shot,prompt_only]",
                    "+strategies.zero_shot.template.user='{{ nonsense }}'", *_model(tiny_model))
    assert r.returncode == 1
    assert "strategy zero_shot failed" in _one_line_error(r) and "nonsense" in r.stdout
    comparison = json.loads((out / "comparison.json").read_text())
    assert "nonsense" in comparison["strategies"]["zero_shot"]["error"]
    assert comparison["strategies"]["prompt_only"]["n"] == 12
    assert (out / "zero_shot" / "error.json").is_file()


def test_seed_replicates_are_reported_each_and_as_a_mean(tiny_model, tmp_path):
    out = tmp_path / "run"
    r = run_harness("task=tiny", f"results_dir={out}", "strategies=[prompt_only]", "strategies.prompt_only.shots=2",
                    "+strategies.prompt_only.seeds=[0,1,2]", *_model(tiny_model))
    assert r.returncode == 0, r.stdout + r.stderr
    arms = json.loads((out / "comparison.json").read_text())["strategies"]
    members = ["prompt_only@seed0", "prompt_only@seed1", "prompt_only@seed2"]
    assert arms["prompt_only"]["replicates"] == members
    demos = [json.loads((out / m / "prepare.json").read_text())["report"]["demo_ids"] for m in members]
    assert len({tuple(d) for d in demos}) == 3  # each replicate really used its own seed
    accs = [arms[m]["metrics"]["accuracy"] for m in members]
    assert arms["prompt_only"]["metrics"]["accuracy"] == pytest.approx(sum(accs) / 3)
    assert "metrics_seed_std" in arms["prompt_only"]


def test_multirun_sweep_writes_one_results_folder_per_combination(tiny_model, tmp_path):
    out = tmp_path / "sweep"
    r = run_harness("-m", "task=tiny", f"results_dir={out}", "strategies=[prompt_only]",
                    "strategies.prompt_only.shots=0,2", *_model(tiny_model))
    assert r.returncode == 0, r.stdout + r.stderr
    shots = sorted(json.loads((out / job / "prompt_only" / "prepare.json").read_text())["settings"]["shots"]
                   for job in ("0", "1"))
    assert shots == [0, 2]


def test_rerun_after_a_finished_training_reuses_the_adapter(tiny_model, tmp_path):
    args = ("task=tiny", f"results_dir={tmp_path / 'run'}", "strategies=[lora]", "strategies.lora.epochs=1",
            "strategies.lora.dev_fraction=0.2", f"cache_dir={tmp_path / 'cache'}", *_model(tiny_model))
    assert run_harness(*args).returncode == 0
    preds = tmp_path / "run" / "lora" / "predictions.jsonl"
    preds.write_text("".join(preds.read_text().splitlines(keepends=True)[:3]))  # as if killed while predicting
    r = run_harness(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "run" / "lora" / "prepare.json").read_text())["report"]
    assert report["cached"] and len(preds.read_text().splitlines()) == 12

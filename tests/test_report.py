"""The decision and reports of a real (tiny-model) run: comparison.json contents, report.md / report.html, and
`harness report` / `harness compare` re-rendering from the stored JSON without a model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_harness


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    r = run_harness("task=tiny", f"results_dir={out}", "strategies=[zero_shot,prompt_only,lora]",
                    "strategies.prompt_only.shots=2", "strategies.lora.epochs=2", "strategies.lora.dev_fraction=0.2",
                    "forgetting.limit=12", "decision.resamples=500",
                    f"cache_dir={tmp_path_factory.mktemp('cache')}", "model=hf", f"model.name_or_path={tiny_model}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Verdict: " in r.stdout and "report:" in r.stdout
    return out


def test_comparison_carries_intervals_tests_costs_and_the_verdict(run_dir):
    c = json.loads((run_dir / "comparison.json").read_text())
    d = c["decision"]
    for arm in ("zero_shot", "prompt_only", "lora"):
        metrics = c["strategies"][arm]["metrics"]
        assert set(d["intervals"][arm]) == set(metrics)
        for m, ci in d["intervals"][arm].items():
            assert ci["ci"][0] - 1e-9 <= metrics[m] <= ci["ci"][1] + 1e-9
        assert d["costs"]["arms"][arm]["per_1k_requests"] > 0
    assert len(d["paired_tests"]) == 3 and all("p_holm" in t for t in d["paired_tests"])
    assert d["costs"]["arms"]["lora"]["fine_tuned"] and d["break_even"]["lora"]["against"] in ("zero_shot", "prompt_only")
    assert set(d["verdict"]) == {"choice", "fine_tuning_justified", "status", "n_needed", "open", "summary",
                                 "reasons", "caveats"}
    assert any("Held-out set too small" in c for c in d["verdict"]["caveats"])  # 12 held-out examples
    forgot = d["forgetting"]
    assert forgot["n"] == 12 and set(forgot["arms"]) == {"lora"}
    assert json.loads((run_dir / "control.json").read_text())["ids"][0] == "gc-001"
    checks = json.loads((run_dir / "data_checks.json").read_text())
    assert set(checks["overlap"]) == {"train"} and checks["label_balance"]["imbalance_ratio"] >= 1


def test_reports_are_self_contained_and_verdict_first(run_dir):
    html = (run_dir / "report.html").read_text()
    verdict = json.loads((run_dir / "comparison.json").read_text())["decision"]["verdict"]
    assert html.index("Choose: " + verdict["choice"]) < html.index("Arms on the same held-out set")
    assert "data:image/png;base64," in html and 'src="http' not in html and "<script" not in html
    md = (run_dir / "report.md").read_text()
    assert md.startswith("# tiny") and "![accuracy against cost](pareto.png)" in md
    assert (run_dir / "pareto.png").stat().st_size > 1000 and (run_dir / "training_curves.png").exists()
    training = json.loads((run_dir / "comparison.json").read_text())["strategies"]["lora"]["training"]
    assert training["stop_reason"] in ("fixed epochs", "plateau") and training["epochs_run"] <= 2
    shown = f"best epoch {training['best_epoch']} of {training['epochs_run']}, stopped: {training['stop_reason']}"
    assert shown in md and shown in html  # where training is shown: the arms table (md) and the Training section


def test_harness_report_re_renders_from_json_with_another_volume(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    for name in ("report.html", "report.md", "pareto.png"):
        (copy / name).unlink()
    r = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(copy), "--volume", "5000000"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (copy / "report.html").exists() and (copy / "pareto.png").exists()
    c = json.loads((copy / "comparison.json").read_text())
    assert c["decision"]["costs"]["volume_per_month"] == 5_000_000
    r = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(tmp_path / "missing")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "comparison.json: not found" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_harness_compare_pairs_the_same_ids(run_dir, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(run_dir, copy)
    metrics = json.loads((copy / "zero_shot" / "metrics.json").read_text())
    first = next(iter(metrics["per_example"].values()))
    first["correct"] = 1 - first["correct"]
    first["parsed"] = first["gold"] if first["correct"] else None
    (copy / "zero_shot" / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "diff.json"
    r = subprocess.run([sys.executable, "-m", "harness.cli", "compare", str(run_dir), str(copy), "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    diff = json.loads(out.read_text())
    rows = {row["arm"]: row for row in diff["arms"]}
    assert rows["zero_shot"]["changed_answers"] == 1 and rows["zero_shot"]["paired_n"] == 12
    assert rows["lora"]["changed_answers"] == 0 and rows["lora"]["p_value"] == 1.0


def test_report_renders_in_a_headless_browser(run_dir, tmp_path):
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no Chromium on this machine (apt install chromium) to render report.html")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,1600", f"--screenshot={shot}", (run_dir / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 1600)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, tables and plots, not a blank or error page


def test_harness_report_out_re_decides_into_a_new_folder_and_leaves_the_run(run_dir, tmp_path):
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    out = tmp_path / "redecided"
    report = [sys.executable, "-m", "harness.cli", "report"]
    r = subprocess.run([*report, str(run_dir), "--volume", "7000000", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert json.loads((out / "comparison.json").read_text())["decision"]["costs"]["volume_per_month"] == 7_000_000
    assert (out / "report.html").exists() and (out / "prompt_only" / "metrics.json").exists()
    assert not (out / "prompt_only" / "predictions.jsonl").exists()  # only the JSON the decision needs
    assert "wrote the new decision to" in r.stdout and "unchanged" in r.stdout
    r = subprocess.run([*report, str(run_dir), "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "not an empty folder" in r.stdout + r.stderr and "Traceback" not in r.stderr
    # without --out the folder is rewritten, and one line says so; a prompt that leaves labels out is shown
    prepare = json.loads((out / "prompt_only" / "prepare.json").read_text())
    prepare["report"]["demo_coverage"] = {"labels_shown": 1, "labels": 2, "labels_in_train": 2, "shots": "auto"}
    (out / "prompt_only" / "prepare.json").write_text(json.dumps(prepare))
    r = subprocess.run([*report, str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and [line for line in r.stdout.splitlines() if line.startswith("rewrote ")]
    line = "prompt_only: its demonstrations show 1 of 2 labels"
    assert line in (out / "report.md").read_text() and line in (out / "report.html").read_text()

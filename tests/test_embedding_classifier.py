"""The embedding-classifier arm (no LLM): C chosen on dev, refusal of non-classification tasks, pricing from its
measured latency, and a run and sweep through the harness that never loads the LLM."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from harness.decision import cost
from harness.errors import ConfigError
from harness.records import ArmResult, Usage
from harness.retriever import Retriever
from harness.strategy import PrepareContext
from harness.task import load_task
from strategies.embedding_classifier import EmbeddingClassifier, choose_c
from tests.conftest import ROOT
from tests.test_sweep import TINY, harness

SIGNAL = 0.05  # the label's feature is small: only a weakly regularised model can lean on it


class TableRetriever(Retriever):
    """A retriever whose embedder is a lookup table (deterministic, no model); the caching code is the real one."""

    def __init__(self, table: dict[str, list[float]]):
        super().__init__(embedder="table")
        self.table, self.calls = table, 0
        self._model = SimpleNamespace(get_embedding_dimension=lambda: len(next(iter(table.values()))))

    def identity(self) -> str:
        return "table|" + json.dumps(sorted(self.table.items()))

    def encode(self, texts, advance=None):
        self.calls += 1
        return np.array([self.table[t] for t in texts], np.float32)


def _no_bars(description, total):
    return lambda n=1: None


def _write(folder: Path, split: str, rows: list[tuple[str, str]]) -> None:
    folder.joinpath(f"{split}.jsonl").write_text(
        "".join(json.dumps({"id": f"{split}{i}", "input": text, "target": label}) + "\n"
                for i, (text, label) in enumerate(rows)))


def _nuisance_task(folder: Path) -> tuple[Path, dict[str, list[float]]]:
    """Two labels told apart by a small feature (±SIGNAL); a large nuisance feature agrees with the label on 80%
    of train and disagrees on 80% of dev. Strong regularisation (small C) leans on the nuisance and fails on dev;
    a weak one (large C) needs the small feature to fit train and gets dev right: the best C is the largest."""
    folder.mkdir()
    (folder / "task.yaml").write_text(yaml.safe_dump({"name": "nuisance", "type": "classification",
                                                      "instruction": "a or b?", "labels": ["a", "b"],
                                                      "metric": "accuracy"}))
    table, splits = {}, {}
    for split, agree in (("train", 0.8), ("dev", 0.2), ("heldout", 0.2)):
        rows = []
        for label, sign in (("a", 1.0), ("b", -1.0)):
            for i in range(10):
                text = f"{split} {label} {i}"
                table[text] = [sign * SIGNAL, sign * (1.0 if i < 10 * agree else -1.0)]
                rows.append((text, label))
        splits[split] = rows
        _write(folder, split, rows)
    return folder, table


def _prepare(strategy, task, tmp_path, seed: int = 0) -> dict:
    return strategy.prepare(PrepareContext(task=task, lm=None, workdir=tmp_path / "arm", cache_dir=tmp_path / "cache",
                                           seed=seed, progress=_no_bars))


def test_dev_chosen_c_is_the_one_with_the_best_dev_score(tmp_path):
    folder, table = _nuisance_task(tmp_path / "task")
    task = load_task(folder)
    strategy = EmbeddingClassifier(TableRetriever(table), c_grid=[0.1, 1, 10, 100])
    report = _prepare(strategy, task, tmp_path)
    scores = report["dev"]["scores_by_c"]
    assert report["dev"]["source"] == "task dev split" and report["dev"]["n"] == 20
    assert scores["0.1"] <= 0.25 and scores["100"] == 1.0  # the construction's known answer
    assert report["chosen_c"] == 100.0 and "C=100" in report["summary"]
    assert report["fit_examples"] == report["train_examples"] == 20 and report["fit_s"] >= 0
    predictions = strategy.predict(task.heldout)
    assert [p.output for p in predictions] == [ex.target for ex in task.heldout]  # refit on train with C=100
    p = predictions[0]
    assert p.usage["input_tokens"] == p.usage["output_tokens"] == 0 and p.usage["latency_s"] > 0
    assert set(p.scores) == {"a", "b"} and max(p.scores, key=p.scores.get) == p.output
    # a second prepare reads the train and dev embeddings from the content-keyed cache
    again = EmbeddingClassifier(TableRetriever(table), c_grid=[0.1, 1, 10, 100])
    assert _prepare(again, task, tmp_path)["embeddings"] == {"train": "cached", "dev": "cached"}
    assert again.retriever.calls == 0


def test_without_a_dev_split_c_is_chosen_on_a_stratified_carve_of_train(tmp_path):
    folder, table = _nuisance_task(tmp_path / "task")
    (folder / "dev.jsonl").unlink()
    task = load_task(folder)
    report = _prepare(EmbeddingClassifier(TableRetriever(table), dev_fraction=0.2), task, tmp_path, seed=3)
    assert report["dev"]["n"] == 4 and "stratified, seed 3" in report["dev"]["source"]
    assert report["fit_examples"] == 16 and report["train_examples"] == 20
    best = max(report["dev"]["scores_by_c"].values())
    assert report["dev"]["scores_by_c"][f"{report['chosen_c']:g}"] == best
    tied = [c for c, v in report["dev"]["scores_by_c"].items() if v == best]
    losses = report["dev"]["log_loss_by_c"]
    assert min(losses[c] for c in tied) == losses[f"{report['chosen_c']:g}"]


def test_ties_go_to_the_lower_dev_log_loss_then_the_smaller_c_and_the_grid_is_checked():
    scores = {0.1: 0.5, 1.0: 0.9, 10.0: 0.9, 100.0: 0.8}
    assert choose_c(scores, {0.1: 0.2, 1.0: 0.7, 10.0: 0.4, 100.0: 0.1}) == 10.0
    assert choose_c(scores, {0.1: 0.2, 1.0: 0.4, 10.0: 0.4, 100.0: 0.1}) == choose_c(scores) == 1.0
    with pytest.raises(ConfigError, match="c_grid"):
        EmbeddingClassifier(TableRetriever({"x": [1.0]}), c_grid=[1, 0])


def test_extraction_and_generation_tasks_are_refused_with_one_line():
    strategy = EmbeddingClassifier(TableRetriever({"x": [1.0]}))
    for name, kind in (("supplier_intake", "extraction"), ("hr_policy_qa", "generation")):
        task = load_task(ROOT / "tasks" / name)
        with pytest.raises(ConfigError) as e:
            strategy.check(task, None)
        message = str(e.value)
        assert "\n" not in message and f"{name} is {kind}" in message and "'embedding_classifier'" in message


def test_pricing_is_per_hour_from_its_latency_never_per_token(tmp_path):
    folder, table = _nuisance_task(tmp_path / "task")
    task = load_task(folder)
    strategy = EmbeddingClassifier(TableRetriever(table))
    _prepare(strategy, task, tmp_path)
    usage = Usage.of_predictions([p.to_json() for p in strategy.predict(task.heldout)])
    config = cost.load_cost_config(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "cost" / "example.yaml")))
    assert config.api_prices  # API prices are configured, and still not paid by an arm without an LLM
    arm = ArmResult.measured("embedding_classifier", usage=usage, metrics={"accuracy": 1.0}, prepare_s=0.5,
                             training=None, model=strategy.arm_model)
    priced = cost.arm_cost(arm, config, "accuracy")
    assert priced["pricing"] == "per_hour" and not priced["fine_tuned"]
    assert math.isfinite(priced["per_1k_requests"]) and priced["per_1k_requests"] > 0
    assert priced["per_1k_requests"] == pytest.approx(
        config.price_per_hour * usage.latency_s.total / usage.n * 1000 / 3600)
    assert priced["one_off_parts"]["setup_compute"] > 0 and priced["recurring_per_month"] == 0
    assert math.isfinite(priced["monthly_total"]) and priced["monthly_total"] > 0


def test_refused_on_an_extraction_task_before_any_model_is_loaded(tmp_path):
    r = harness("task=supplier_intake", "strategies=[embedding_classifier]", f"results_dir={tmp_path / 'run'}",
                "model=hf", f"model.name_or_path={tmp_path / 'no-such-model'}", timeout=300)
    assert r.returncode != 0
    lines = [line for line in (r.stdout + r.stderr).splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and "supplier_intake is extraction" in lines[0], r.stdout + r.stderr
    assert "loading the model" not in r.stdout


def test_a_sweep_with_the_classifier_beside_an_llm_arm(tiny_model, tmp_path):
    out = tmp_path / "sweep"
    r = harness("-m", *TINY, f"results_dir={out}", "limit.heldout=6,8", "strategies=[zero_shot,embedding_classifier]",
                "model=hf", f"model.name_or_path={tiny_model}", f"cache_dir={tmp_path / 'cache'}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for job, n in (("0", 6), ("1", 8)):
        c = json.loads((out / job / "comparison.json").read_text())
        arm = c["strategies"]["embedding_classifier"]
        assert arm["n"] == n and arm["training"] is None
        assert arm["model"] == {"backend": "no LLM", "name_or_path": "packaged:all-minilm-l6-v2 + logistic regression"}
        priced = c["decision"]["costs"]["arms"]["embedding_classifier"]
        assert not priced["fine_tuned"] and priced["per_1k_requests"] > 0
        prepared = json.loads((out / job / "embedding_classifier" / "prepare.json").read_text())["report"]
        assert prepared["chosen_c"] in (0.1, 1.0, 10.0, 100.0) and set(prepared["dev"]["scores_by_c"]) == \
            {"0.1", "1", "10", "100"}
    assert "no LLM: all-minilm-l6-v2 + logistic regression" in (out / "0" / "report.md").read_text()
    r = harness("sweep", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert {(row["job"], row["arm"]) for row in rows} >= {("0", "embedding_classifier"), ("1", "embedding_classifier")}


def test_a_run_of_only_the_classifier_never_loads_the_llm(tmp_path):
    r = harness(*TINY, f"results_dir={tmp_path / 'run'}", "strategies=[embedding_classifier]", "model=hf",
                f"model.name_or_path={tmp_path / 'no-such-model'}", f"cache_dir={tmp_path / 'cache'}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    c = json.loads((tmp_path / "run" / "comparison.json").read_text())
    assert c["model"]["backend"] == "no LLM" and c["decision"]["verdict"]["choice"] == "embedding_classifier"
    r = harness("record", str(tmp_path / "run"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "| embedding_classifier | no LLM: packaged:all-minilm-l6-v2 + logistic regression |" in \
        (tmp_path / "run" / "decision_record.md").read_text()

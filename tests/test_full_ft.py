"""The full fine-tuning arm on a tiny random model: it trains every weight with LoRA's data path, predicts, caches
apart from LoRA adapters, and refuses in one line a model too large for the memory."""

from collections import namedtuple

import pytest

from harness.errors import ConfigError
from harness.lm.hf import TransformersLM
from harness.strategy import PrepareContext
from strategies.full_ft import BYTES_PER_PARAMETER, FullFT
from strategies.lora import LoRA, cache_folder
from tests.test_lora import _keyword_task, _no_bars

FAST = dict(dropout=0.0, learning_rate=3e-3, epochs=4, batch_size=8, dtype="fp32")


def test_full_ft_trains_every_weight_predicts_and_caches_apart_from_lora(tiny_model, tmp_path):
    task = _keyword_task(tmp_path / "task", n_train=40, n_heldout=8)
    lm = TransformersLM(str(tiny_model))
    ctx = PrepareContext(task, lm, tmp_path / "work", tmp_path / "cache", 0, _no_bars)
    arm = FullFT(**FAST)
    report = arm.prepare(ctx)
    t = report["training"]
    assert not report["cached"] and t["method"] == "full_ft" and t["trainable_parameters"] == t["total_parameters"]
    assert t["history"][-1]["train_loss"] < t["history"][0]["train_loss"] and t["peak_memory_mb"] > 0
    assert report["summary"].startswith("full fine-tune, ") and t["stop_reason"]
    preds = arm.predict(task.heldout)
    assert len(preds) == 8 and all(p.output in task.labels for p in preds)
    assert arm.tuned_lm is arm.lm and arm.lm.model is not lm.model  # the base model is untouched
    assert (tmp_path / "cache" / "full_ft").is_dir() and report["weights"].startswith(str(tmp_path / "cache" / "full_ft"))

    again = FullFT(**FAST).prepare(ctx)
    assert again["cached"] and again["weights"] == report["weights"]
    assert FullFT(**FAST, rank=64).describe() == arm.describe()  # LoRA-only settings do not retrain it
    lora = LoRA(**FAST).prepare(ctx)  # same data and settings: a separate artefact, never the full model
    assert not lora["cached"] and lora["adapter"] != report["weights"]
    assert lora["adapter"].startswith(str(tmp_path / "cache" / "adapters"))


def test_cache_keys_of_the_two_kinds_never_collide(tmp_path):
    parts = [{"model": "m"}, [("p", "t")], [], {"rank": 8}, 0]
    lora, key = cache_folder(tmp_path, "lora", parts)
    full, full_key = cache_folder(tmp_path, "full_ft", parts)
    assert key != full_key and lora.parent.name == "adapters" and full.parent.name == "full_ft"


def test_a_model_too_large_for_the_memory_is_refused_in_one_line(monkeypatch):
    model = {"name_or_path": "big-model", "parameters": 7_000_000_000, "device": "cpu"}
    arm = FullFT(max_memory_gb=64)
    with pytest.raises(ConfigError) as e:
        arm.check_memory(model)
    message = str(e.value)
    need = 7e9 * BYTES_PER_PARAMETER / 2**30
    assert "\n" not in message and "'full_ft'" in message and f"~{need:.1f} GB" in message
    assert "max_memory_gb (64.0 GB)" in message and "strategies.full_ft" in message

    import strategies.full_ft as full_ft
    memory = namedtuple("memory", "available")
    monkeypatch.setattr(full_ft.psutil, "virtual_memory", lambda: memory(2 * 2**30))
    with pytest.raises(ConfigError, match=r"above the available RAM \(2.0 GB\)"):
        FullFT().check_memory({**model, "parameters": 200_000_000})
    assert FullFT().check_memory({**model, "parameters": 1_000_000}) == pytest.approx(1e6 * 20 / 2**30)
    with pytest.raises(ConfigError, match="max_memory_gb"):
        FullFT(max_memory_gb=1).check_memory({**model, "parameters": 10**9, "device": "cuda:0"})
    assert FullFT().check_memory({**model, "parameters": 10**9, "device": "cuda:0"}) > 2  # RAM not the limit


def test_unknown_full_ft_key_is_refused():
    with pytest.raises(ConfigError, match="strategies.full_ft.max_memory'"):
        FullFT(max_memory=3)

"""LoRA settings: epochs auto (plateau, step floor, cap), a number of epochs as before, the one source of defaults
(lora.yaml; combined and full_ft inherit it through Hydra), unknown keys refused."""

import pytest

from harness.errors import ConfigError
from harness.lm.hf import TransformersLM
from strategies.lora import LoRA, lora_defaults

PAIRS = [(f"ticket {i}: please route", "billing" if i % 2 else "refunds") for i in range(16)]  # 2 steps per epoch


def _train(tiny_model, tmp_path, metric, **settings):
    """Train on 16 pairs (batch 8: 2 optimizer steps per epoch) with a scripted dev metric per epoch."""
    lm = TransformersLM(str(tiny_model))
    scores = iter(metric)
    config = {**lora_defaults(), "dtype": "fp32", "batch_size": 8, "learning_rate": 1e-3, **settings}
    return lm.train_adapter(PAIRS, PAIRS[:4], config, tmp_path, 0, dev_metric=lambda model: next(scores))


def test_auto_epochs_stop_on_a_plateau_once_the_step_floor_is_reached(tiny_model, tmp_path):
    flat = [0.5] * 30  # the dev metric never improves after epoch 1
    report = _train(tiny_model, tmp_path / "a", flat, epochs="auto", min_steps=0, max_epochs=20)
    assert report["stop_reason"] == "plateau" and report["patience"] == 2  # auto patience: 2 with epochs auto
    assert report["epochs_run"] == 3 and report["best_epoch"] == 1 and report["optimizer_steps"] == 6
    assert report["lr_schedule"] == "warm-up, then constant"
    assert any("best after the first epoch" in w for w in report["warnings"])
    floored = _train(tiny_model, tmp_path / "b", flat, epochs="auto", min_steps=20, max_epochs=20)
    assert floored["stop_reason"] == "plateau" and floored["optimizer_steps"] == 20 and floored["epochs_run"] == 10
    assert floored["min_steps"] == 20 and [r["optimizer_steps"] for r in floored["history"]][:2] == [2, 4]


def test_auto_epochs_stop_at_the_cap_while_still_improving(tiny_model, tmp_path):
    rising = [0.1 * i for i in range(1, 30)]
    report = _train(tiny_model, tmp_path, rising, epochs="auto", min_steps=0, max_epochs=4)
    assert report["stop_reason"] == "max_epochs" and report["epochs_run"] == 4 and report["best_epoch"] == 4
    assert any("still improving" in w for w in report["warnings"])
    assert not any("first epoch" in w for w in report["warnings"])


def test_a_number_of_epochs_works_as_before(tiny_model, tmp_path):
    rising = [0.1 * i for i in range(1, 30)]
    report = _train(tiny_model, tmp_path / "a", rising, epochs=2)
    assert report["stop_reason"] == "fixed epochs" and report["epochs_run"] == 2 and report["min_steps"] is None
    assert report["lr_schedule"] == "warm-up, then linear decay" and report["patience"] == 1
    stopped = _train(tiny_model, tmp_path / "b", [0.5] * 30, epochs=5, min_steps=100)  # floor only under auto
    assert stopped["stop_reason"] == "plateau" and stopped["epochs_run"] == 2  # patience auto: 1 with a number


def test_bad_epoch_settings_are_refused(tiny_model, tmp_path):
    for key, value in (("epochs", "forever"), ("epochs", 0), ("patience", -1), ("max_epochs", 0)):
        with pytest.raises(ConfigError, match=f"field '{key}'"):
            _train(tiny_model, tmp_path, [0.5], **{key: value})


def _compose(*overrides):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from tests.conftest import ROOT

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return OmegaConf.to_container(cfg.strategies)


def test_lora_yaml_is_the_one_source_and_combined_and_full_ft_inherit_every_key():
    arms = _compose("strategies=[lora,combined,full_ft]")
    lora, combined, full = arms["lora"], arms["combined"], arms["full_ft"]
    assert {k: v for k, v in lora.items() if k not in ("_target_", "seeds")} == lora_defaults()  # seeds: the runner's
    for k, v in lora.items():
        if k not in ("_target_", "max_length", "max_step_tokens"):
            assert combined[k] == v, k
        if k not in ("_target_", "learning_rate"):
            assert full[k] == v, k
    assert combined["max_length"] == 1024 and combined["retriever"]["_target_"] == "harness.retriever.Retriever"
    assert combined["max_step_tokens"] == 2048 < lora["max_step_tokens"]
    assert full["learning_rate"] < lora["learning_rate"] and full["max_memory_gb"] is None
    # an override of lora's default on the command line reaches only the arm it names
    changed = _compose("strategies=[lora,combined]", "strategies.lora.rank=4")
    assert changed["lora"]["rank"] == 4 and changed["combined"]["rank"] == lora["rank"]


def test_unknown_lora_key_is_one_line_naming_the_key():
    with pytest.raises(ConfigError) as e:
        LoRA(ranks=4)
    assert "strategies.lora.ranks" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="strategies.combined.epoch'"):
        LoRA(name="combined", epoch=3)


def test_max_step_tokens_bounds_memory_and_stays_out_of_the_fingerprint():
    """It changes how a batch is run, not what is trained: an arm resumes, and a cached adapter is reused, whatever
    it is set to; a setting that does change training (rank) changes the fingerprint."""
    assert LoRA(max_step_tokens=512).describe() == LoRA().describe()
    assert "max_step_tokens" not in LoRA().describe() and LoRA(rank=4).describe() != LoRA().describe()
    with pytest.raises(ConfigError, match="max_step_tokens"):
        from harness.lm.train_config import TrainConfig

        TrainConfig.from_settings({**lora_defaults(), "max_step_tokens": 0})

"""The runner's contracts with its arms: every strategy class satisfies the Strategy protocol's declared members,
and the runner's plan runs each arm's check() exactly once, handing its result back to prepare."""

import importlib
import inspect
import pkgutil
import typing
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import strategies
from harness.errors import ConfigError
from harness.lm import LM
from harness.records import Comparison
from harness.runner import Runner
from harness.strategy import MEMBERS, Prediction, Strategy, missing_members
from tests.conftest import ROOT


def _strategy_classes() -> list[type]:
    found = []
    for info in pkgutil.iter_modules(strategies.__path__):
        module = importlib.import_module(f"strategies.{info.name}")
        found += [c for _, c in inspect.getmembers(module, inspect.isclass)
                  if c.__module__ == module.__name__ and hasattr(c, "predict")]
    return found


def test_protocol_members_are_the_declared_ones():
    assert set(MEMBERS) == set(typing._get_protocol_attrs(Strategy))


@pytest.mark.parametrize("cls", _strategy_classes(), ids=lambda c: c.__name__)
def test_every_strategy_class_satisfies_the_protocol(cls):
    assert Strategy in cls.__mro__ and missing_members(cls) == []
    for name in ("check", "prepare", "predict", "describe"):  # same parameters as the protocol's
        assert list(inspect.signature(getattr(cls, name)).parameters)[:2] == \
            list(inspect.signature(getattr(Strategy, name)).parameters)[:2], name


def test_every_configured_target_builds_a_protocol_class():
    for path in sorted((ROOT / "conf" / "strategies").glob("*.yaml")):
        target = OmegaConf.load(path).get("_target_")
        if target is None:  # inherits another arm's (Hydra defaults)
            continue
        module, _, name = target.rpartition(".")
        built = getattr(importlib.import_module(module), name)
        if not inspect.isclass(built):  # a factory (combined): the class it returns, by its annotation's name
            built = getattr(importlib.import_module(module), inspect.signature(built).return_annotation)
        cls = built
        assert Strategy in cls.__mro__ and missing_members(cls) == [], path.name


def test_backends_declare_the_lm_members():
    from harness.lm.hf import TransformersLM
    from harness.lm.http import HTTPChatLM
    from harness.lm.llamacpp import LlamaCppLM

    members = set(typing._get_protocol_attrs(LM)) - {"capabilities"}  # capabilities: set per instance
    assert {"train_adapter", "with_adapter", "with_weights", "counters"} <= members
    for cls in (TransformersLM, LlamaCppLM, HTTPChatLM):
        assert LM in cls.__mro__ and all(hasattr(cls, m) for m in members), cls


class CountingArm(Strategy):
    """An LLM-free arm that predicts the first label and counts its check() calls."""

    uses_llm = False
    checks: list[str] = []
    prepared: list[dict | None] = []

    def __init__(self, name: str = "count", seed: int | None = None):
        self.name, self.seed = name, seed

    @property
    def arm_model(self) -> dict:
        return {"backend": "no LLM", "name_or_path": "first label"}

    def check(self, task, lm) -> dict:
        CountingArm.checks.append(self.name)
        return {"checked_by": self.name}

    def prepare(self, ctx) -> dict:
        CountingArm.prepared.append(ctx.checked)
        ctx.progress("train LoRA", 1)(1)  # what the trainer and the retriever label their bars with
        self.label = ctx.task.labels[0]
        return {"summary": "first label"}

    def predict(self, examples):
        return [Prediction(ex.id, self.label, ex.input, {"input_tokens": 0, "output_tokens": 0, "latency_s": 0.0})
                for ex in examples]

    def describe(self) -> dict:
        return {"kind": "count", "seed": self.seed}


class NotAStrategy:
    def __init__(self, name: str = "bare"):
        self.name = name


def _cfg(tmp_path: Path, arms: dict):
    from hydra import compose, initialize_config_dir

    import harness.cli  # noqa: F401  (registers the config's resolvers)

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["task=tiny", f"results_dir={tmp_path / 'run'}",
                                           f"cache_dir={tmp_path / 'cache'}", "checks.near_duplicates=false",
                                           "forgetting.control=none", "strategies=[zero_shot]"])
    OmegaConf.set_struct(cfg, False)
    cfg.strategies = arms
    return cfg


def test_runner_checks_each_arm_once_and_hands_the_result_to_prepare(tmp_path):
    CountingArm.checks.clear()
    CountingArm.prepared.clear()
    target = f"{__name__}.CountingArm"
    cfg = _cfg(tmp_path, {"count": {"_target_": target}, "twice": {"_target_": target, "seeds": [1, 2]}})
    comparison = Comparison.from_json(Runner(cfg, tmp_path / "run").run())
    assert sorted(CountingArm.checks) == ["count", "twice@seed1", "twice@seed2"]
    assert CountingArm.prepared == [{"checked_by": n} for n in ["count", "twice@seed1", "twice@seed2"]]
    assert not any(r.failed for r in comparison.arms.values()) and comparison.arms["twice"].is_mean
    assert comparison.model["backend"] == "no LLM"  # no arm uses an LLM: none was loaded


def test_progress_lines_of_a_prepare_name_the_arm(tmp_path, monkeypatch):
    """combined trains a LoRA adapter and embeds a corpus: its bars must say combined, not lora or retrieval."""
    from contextlib import contextmanager

    from harness.report import display

    described = []

    @contextmanager
    def recording():
        yield lambda what, total: (described.append(what), lambda n=1: None)[1]

    monkeypatch.setattr(display, "progress", recording)
    cfg = _cfg(tmp_path, {"combined": {"_target_": f"{__name__}.CountingArm"}})
    Runner(cfg, tmp_path / "run").run()
    assert "combined: train LoRA" in described
    assert all(what.startswith("combined: ") for what in described), described


def test_a_target_outside_the_protocol_is_refused_in_one_line(tmp_path):
    cfg = _cfg(tmp_path, {"bare": {"_target_": f"{__name__}.NotAStrategy"}})
    with pytest.raises(ConfigError) as e:
        Runner(cfg, tmp_path / "run").run()
    assert "strategies.bare" in str(e.value) and "check" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.parametrize("arm_class", ["strategies.prompt_only.PromptOnly", "strategies.lora.LoRA"])
def test_a_strategy_handed_its_check_result_does_not_check_again(arm_class, tiny_model, tmp_path, monkeypatch):
    from harness.lm.hf import TransformersLM
    from harness.strategy import PrepareContext
    from harness.task import load_task

    module, _, name = arm_class.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    calls = []
    original = cls.check
    monkeypatch.setattr(cls, "check", lambda self, task, lm: calls.append(self) or original(self, task, lm))
    task, lm = load_task(ROOT / "tasks" / "tiny"), TransformersLM(str(tiny_model))
    settings = ({"epochs": 1, "rank": 2, "batch_size": 8, "dtype": "fp32", "target_modules": ["q_proj"]}
                if name == "LoRA" else {"shots": 0})
    arm = cls(**settings)
    checked = arm.check(task, lm)
    assert checked["decode"] == "score" and checked["max_new_tokens"] >= 1
    no_bars = lambda d, t: (lambda n=1: None)  # noqa: E731
    arm.prepare(PrepareContext(task, lm, tmp_path / "a", tmp_path / "cache", 0, no_bars, checked=checked))
    assert calls == [arm]  # the plan's check only
    other = cls(**settings)
    other.prepare(PrepareContext(task, lm, tmp_path / "b", tmp_path / "cache", 0, no_bars))  # a direct caller
    assert calls == [arm, other]

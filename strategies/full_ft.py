"""Full fine-tuning arm: every weight of the arm's model trained with the LoRA arm's data path, composed from its
pieces (strategies/lora.py): the same prompts (instruction + input → target), loss on the target only, the dev split
and best-epoch selection (epochs auto by default), a content-keyed cache in its own folder (cache_dir/full_ft/, the
kind in the key, so it never collides with a LoRA adapter). LoRA vs full fine-tuning is then one more row, with its
training time and peak memory. Refused before any arm runs, in one line, when the estimated training memory exceeds
the available RAM or max_memory_gb.
"""

from __future__ import annotations

from typing import Sequence

import psutil

from harness.lm import constrained as constrained_decoding
from harness import inference
from harness.errors import ConfigError
from harness.lm import TRAIN
from harness.prompts import template_from_config
from harness.strategy import PrepareContext, Prediction, Strategy
from harness.task import Example
from strategies.lora import (ARM_KEYS, MEMORY_ONLY, InstructionPrompts, arm_settings, cache_folder, dev_metric,
                             split_dev, stop_words, train_cached, training_pairs)

# fp32 weights 4 + gradients 4 + AdamW's two moments 8 + the best epoch's copy 4 bytes; activations come on top
BYTES_PER_PARAMETER = 20
LORA_ONLY = ("rank", "alpha", "dropout", "target_modules", "qlora", "merge")  # inherited from lora.yaml, unused


def training_memory_gb(parameters: int) -> float:
    return parameters * BYTES_PER_PARAMETER / 2**30


class FullFT(Strategy):
    """Settings: conf/strategies/full_ft.yaml (lora.yaml's keys and max_memory_gb)."""

    def __init__(self, prompts=None, name: str = "full_ft", **settings):
        s = arm_settings(settings, name, own={"max_memory_gb": None})
        if s["select_on"] not in ("dev_loss", "dev_metric"):
            raise ConfigError(f"must be dev_loss or dev_metric, got {s['select_on']!r}",
                              field=f"strategies.{name}.select_on")
        self.max_memory_gb = s.pop("max_memory_gb")
        # TrainConfig takes every training field; the LoRA-only ones are ignored when full=True
        self.train_config = {k: v for k, v in s.items() if k not in ARM_KEYS}
        self.dev_fraction, self.select_on, self.seed = s["dev_fraction"], s["select_on"], s["seed"]
        self.decode, self.max_new_tokens, self.name = s["decode"], s["max_new_tokens"], name
        self.prompts = prompts or InstructionPrompts(template_from_config(s["template"]))
        self.constrained, self.constraint = constrained_decoding.parse_setting(s["constrained"], name), None
        self.lm = None  # the tuned model, after prepare

    def describe(self) -> dict:
        return {"kind": "full_ft", **{k: v for k, v in self.train_config.items() if k not in LORA_ONLY + MEMORY_ONLY},
                "dev_fraction": self.dev_fraction, "select_on": self.select_on, "seed": self.seed,
                "decode": self.decode, "max_new_tokens": self.max_new_tokens, **self.prompts.describe(),
                **constrained_decoding.describe(self.constraint)}

    def check(self, task, lm) -> dict:
        """Refuse what the backend cannot train, and a model whose full fine-tuning would not fit in memory."""
        if TRAIN not in lm.capabilities:
            raise ConfigError(f"arm {self.name!r} fine-tunes the model, which its "
                              f"{lm.describe().get('backend', '?')} backend cannot do (use the transformers "
                              f"backend: model=hf or the default)", field=f"strategies.{self.name}")
        self.memory_gb = self.check_memory(lm.describe())
        self.mode = inference.resolve_decode(task, lm, self.decode, self.name)
        self.new_tokens = inference.max_new_tokens_for(task, lm, self.max_new_tokens, self.name)
        self.constraint, self.constraint_report = constrained_decoding.setup(task, lm, self.constrained, self.mode,
                                                                             self.name)
        return {"decode": self.mode, "max_new_tokens": self.new_tokens, "constrained": self.constraint_report,
                "memory_estimate_gb": self.memory_gb}

    def check_memory(self, model: dict) -> float:
        """The estimated training memory (GB), refused above max_memory_gb or (CPU) the available RAM."""
        parameters = int(model.get("parameters") or 0)
        need = training_memory_gb(parameters)
        limits = [] if self.max_memory_gb is None else [("max_memory_gb", float(self.max_memory_gb))]
        if not str(model.get("device", "cpu")).startswith("cuda"):
            limits.append(("available RAM", psutil.virtual_memory().available / 2**30))
        for what, limit in limits:
            if need > limit:
                raise ConfigError(
                    f"arm {self.name!r}: full fine-tuning of {model.get('name_or_path')} ({parameters / 1e6:.0f}M "
                    f"parameters) needs ~{need:.1f} GB ({BYTES_PER_PARAMETER} bytes/parameter: fp32 weights, "
                    f"gradients, AdamW states, best-epoch copy; activations extra), above the {what} "
                    f"({limit:.1f} GB); use the lora arm or a smaller model", field=f"strategies.{self.name}")
        return need

    def prepare(self, ctx: PrepareContext) -> dict:
        self.task, base = ctx.task, ctx.lm
        if ctx.checked is None:  # not run by the runner's plan
            self.check(self.task, base)
        seed = ctx.seed if self.seed is None else self.seed
        train, dev, dev_source = split_dev(self.task, self.dev_fraction, seed)
        report = {"prompts": self.prompts.prepare(ctx), "dev": dev_source, "decode": self.mode,
                  "max_new_tokens": self.new_tokens, "memory_estimate_gb": self.memory_gb,
                  "constrained": self.constraint_report}
        train_pairs = training_pairs(self.task, self.prompts, train)
        dev_pairs = training_pairs(self.task, self.prompts, dev)
        settings = {k: v for k, v in self.describe().items()  # decoding alone does not change the weights
                    if k != "constrained" or self.select_on == "dev_metric"}
        folder, key = cache_folder(ctx.cache_dir, "full_ft", [base.describe(), train_pairs, dev_pairs, settings, seed])
        training, cached = train_cached(folder, key, lambda out: base.train_adapter(
            train_pairs, dev_pairs, self.train_config, out, seed, ctx.progress,
            dev_metric(self.task, self.prompts, dev, self.mode, self.new_tokens, self.constraint)
            if self.select_on == "dev_metric" else None, full=True))
        self.lm = base.with_weights(folder)
        self.prompts.lm = self.lm
        summary = (f"full fine-tune, {training['epochs_run']} ep ({stop_words(training)}), "
                   f"{training['wall_s']:.0f}s train{' (cached)' if cached else ''}")
        report.update({"weights": str(folder), "cached": cached, "training": training, "summary": summary})
        return report

    @property
    def tuned_lm(self):
        """The fine-tuned model this arm predicts with (the forgetting check scores it on a control set)."""
        return self.lm

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        return inference.predict_built(self.task, self.lm, examples, self.prompts.build, decode=self.mode,
                                       max_new_tokens=self.new_tokens, constraint=self.constraint)

"""LoRA fine-tuned arm: a peft adapter trained on the task's train split with exactly the inference prompt
(instruction + input → target), loss on the target only, the best epoch on a dev split kept, adapters cached by
content. Inference goes through the same scoring paths as every other arm (label log-likelihood or generation).

The prompt builder is pluggable: `InstructionPrompts` (zero-shot, default) or the retrieval arm's builder, which is
how the combined arm is composed (strategies/combined.py).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from filelock import FileLock

from harness import constrained as constrained_decoding
from harness import inference
from harness.errors import ConfigError
from harness.lm import TRAIN
from harness.prompts import PromptTemplate, build_messages, target_text, template_from_config
from harness.results import read_json, write_json
from harness.strategy import PrepareContext, Prediction
from harness.task import Example, Task

MIN_DEV = 4
MIN_TRAIN = 8


class InstructionPrompts:
    """Zero-shot prompts: the task instruction and the input (what the adapter learns to answer)."""

    def __init__(self, template: PromptTemplate):
        self.template = template

    def describe(self) -> dict:
        return {"prompts": "instruction", "template": {"system": self.template.system, "user": self.template.user}}

    def prepare(self, ctx: PrepareContext) -> dict:
        self.task, self.lm = ctx.task, ctx.lm
        return {}

    def build(self, examples: Sequence[Example], exclude_self: bool = False):
        prompts = [self.lm.render(build_messages(self.task, self.template, ex)) for ex in examples]
        return prompts, [None] * len(examples), [{}] * len(examples)


def split_dev(task: Task, fraction: float, seed: int) -> tuple[list[Example], list[Example], str]:
    """The task's dev split, or a seeded carve-out of train (stratified by label for classification)."""
    if task.split("dev"):
        return list(task.train), list(task.split("dev")), "task dev split"
    n_dev = max(MIN_DEV, round(fraction * len(task.train)))
    if len(task.train) - n_dev < MIN_TRAIN:
        raise ConfigError(f"train split has {len(task.train)} examples; carving a dev set of {n_dev} needs at least "
                          f"{MIN_TRAIN + n_dev} (or add dev.jsonl to the task)", field="train")
    rng = random.Random(seed)
    groups: dict = defaultdict(list)
    for ex in task.train:
        groups[ex.target if task.type == "classification" else None].append(ex)
    dev_ids = set()
    for key in sorted(groups, key=str):
        members = groups[key][:]
        rng.shuffle(members)
        dev_ids.update(ex.id for ex in members[:round(fraction * len(members))])
    pool = [ex for ex in task.train if ex.id not in dev_ids]
    rng.shuffle(pool)
    while len(dev_ids) < n_dev:  # rounding left the dev set short
        dev_ids.add(pool.pop().id)
    return ([ex for ex in task.train if ex.id not in dev_ids], [ex for ex in task.train if ex.id in dev_ids],
            f"{len(dev_ids)} carved from train (seed {seed})")


class LoRA:
    def __init__(self, rank: int = 8, alpha: int = 16, dropout: float = 0.05,
                 target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"), learning_rate: float = 2e-4,
                 epochs: int = 3, batch_size: int = 8, grad_accum: int = 1, max_length: int = 512,
                 warmup_ratio: float = 0.06, weight_decay: float = 0.0, max_grad_norm: float = 1.0, patience: int = 1, dtype: str = "auto",
                 group_by_length: bool = True, target_only_logits: bool = True, shared_prefix: bool = True,
                 qlora: bool = False,
                 dev_fraction: float = 0.15, select_on: str = "dev_loss", merge: bool = True, seed: int | None = None,
                 decode: str = "auto", max_new_tokens: int | str = "auto", template: dict | None = None,
                 prompts=None, constrained: bool | str = False,
                 name: str = "lora"):
        if select_on not in ("dev_loss", "dev_metric"):
            raise ConfigError(f"must be dev_loss or dev_metric, got {select_on!r}", field=f"strategies.{name}.select_on")
        self.train_config = {"rank": rank, "alpha": alpha, "dropout": dropout, "target_modules": tuple(target_modules),
                             "learning_rate": learning_rate, "epochs": epochs, "batch_size": batch_size,
                             "grad_accum": grad_accum, "max_length": max_length, "warmup_ratio": warmup_ratio,
                             "weight_decay": weight_decay, "max_grad_norm": max_grad_norm, "patience": patience, "dtype": dtype,
                             "group_by_length": group_by_length, "target_only_logits": target_only_logits,
                             "shared_prefix": shared_prefix, "qlora": qlora}
        self.dev_fraction, self.select_on, self.merge, self.seed = dev_fraction, select_on, merge, seed
        self.decode, self.max_new_tokens, self.name = decode, max_new_tokens, name
        self.prompts = prompts or InstructionPrompts(template_from_config(template))
        self.constrained, self.constraint = constrained_decoding.parse_setting(constrained, name), None

    def describe(self) -> dict:
        return {"kind": "lora", **{k: list(v) if isinstance(v, tuple) else v for k, v in self.train_config.items()},
                "dev_fraction": self.dev_fraction, "select_on": self.select_on, "merge": self.merge,
                "seed": self.seed, "decode": self.decode, "max_new_tokens": self.max_new_tokens,
                **self.prompts.describe(), **constrained_decoding.describe(self.constraint)}

    def check(self, task, lm) -> None:
        """Refuse, before any arm runs, what the task or the arm's backend cannot do."""
        if TRAIN not in lm.capabilities:
            raise ConfigError(f"arm {self.name!r} trains an adapter, which its {lm.describe().get('backend', '?')} "
                              f"backend cannot do (use the transformers backend: model=hf or the default)",
                              field=f"strategies.{self.name}")
        self.mode = inference.resolve_decode(task, lm, self.decode, self.name)
        self.new_tokens = inference.max_new_tokens_for(task, lm, self.max_new_tokens, self.name)
        self.constraint, self.constraint_report = constrained_decoding.setup(task, lm, self.constrained, self.mode,
                                                                             self.name)

    def prepare(self, ctx: PrepareContext) -> dict:
        self.task, base = ctx.task, ctx.lm
        self.check(self.task, base)
        seed = ctx.seed if self.seed is None else self.seed
        train, dev, dev_source = split_dev(self.task, self.dev_fraction, seed)
        report = {"prompts": self.prompts.prepare(ctx), "dev": dev_source, "decode": self.mode,
                  "max_new_tokens": self.new_tokens, "constrained": self.constraint_report}
        train_pairs = self._pairs(train)
        dev_pairs = self._pairs(dev)
        settings = {k: v for k, v in self.describe().items()  # decoding alone does not change the adapter
                    if k != "constrained" or self.select_on == "dev_metric"}
        key = hashlib.sha256(json.dumps([base.describe(), train_pairs, dev_pairs, settings, seed],
                                        sort_keys=True, default=list).encode()).hexdigest()[:20]
        folder = Path(ctx.cache_dir) / "adapters" / key
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):  # a second run waits for, then reuses, the adapter
            if (folder / "training.json").is_file():
                training, cached = read_json(folder / "training.json"), True
            else:
                tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
                try:  # an interrupted run leaves only this temporary folder: never used as finished
                    metric = self._dev_metric(dev) if self.select_on == "dev_metric" else None
                    training = base.train_adapter(train_pairs, dev_pairs, self.train_config, tmp, seed,
                                                  ctx.progress, metric)
                    write_json(tmp / "training.json", training)
                    tmp.rename(folder)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                cached = False
        start = time.perf_counter()
        self.lm = base.with_adapter(folder, merge=self.merge)
        self.prompts.lm = self.lm
        summary = self._summary(training, cached)
        if report["prompts"].get("mode"):  # composed with the retrieval prompt builder (the combined arm)
            summary += f" on top-{report['prompts']['k_used']} {report['prompts']['mode']}"
        report.update({"adapter": str(folder), "cached": cached, "load_s": time.perf_counter() - start,
                       "training": training, "summary": summary})
        return report

    def _summary(self, training: dict, cached: bool) -> str:
        c = self.train_config
        return (f"LoRA r={c['rank']}, {training['epochs_run']} ep (best {training['best_epoch']}), "
                f"{training['wall_s']:.0f}s train{' (cached)' if cached else ''}")

    def _pairs(self, examples: Sequence[Example]) -> list[tuple[str, str]]:
        prompts, _, _ = self.prompts.build(examples, exclude_self=True)
        return [(p, target_text(self.task, ex.target)) for p, ex in zip(prompts, examples)]

    def _dev_metric(self, dev: Sequence[Example]):
        from harness.scoring import score_examples

        prompts, _, _ = self.prompts.build(dev, exclude_self=True)

        def metric(tuned) -> float:
            tuned.model.eval()
            preds = inference.predict(self.task, tuned, dev, prompts, decode=self.mode,
                                      max_new_tokens=self.new_tokens, constraint=self.constraint)
            tuned.model.train()
            result = score_examples(self.task, dev, [p.output for p in preds])
            return result["metrics"][self.task.metric]
        return metric

    @property
    def tuned_lm(self):
        """The fine-tuned model this arm predicts with (the forgetting check scores it on a control set)."""
        return getattr(self, "lm", None)

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        return inference.predict_built(self.task, self.lm, examples, self.prompts.build, decode=self.mode,
                                       max_new_tokens=self.new_tokens, constraint=self.constraint)

"""LoRA fine-tuned arm: a peft adapter trained on the task's train split with exactly the inference prompt
(instruction + input → target), loss on the target only, the best epoch on a dev split kept, adapters cached by
content. Inference goes through the same scoring paths as every other arm (label log-likelihood or generation).

The prompt builder is pluggable: `InstructionPrompts` (zero-shot, default) or the retrieval arm's builder, which is
how the combined arm is composed (strategies/combined.py).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import random
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from filelock import FileLock

from harness.lm import constrained as constrained_decoding
from harness import inference, kinds
from harness.errors import ConfigError
from harness.lm import TRAIN
from harness.prompts import PromptTemplate, build_messages, target_text, template_from_config
from harness.results import read_json, write_json
from harness.scoring import score_arm
from harness.strategy import PrepareContext, Prediction, Strategy
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
    """The task's dev split, or a seeded carve-out of train (stratified by label for a labelled task kind)."""
    if task.split("dev"):
        return list(task.train), list(task.split("dev")), "task dev split"
    n_dev = max(MIN_DEV, round(fraction * len(task.train)))
    if len(task.train) - n_dev < MIN_TRAIN:
        raise ConfigError(f"train split has {len(task.train)} examples; carving a dev set of {n_dev} needs at least "
                          f"{MIN_TRAIN + n_dev} (or add dev.jsonl to the task)", field="train")
    rng = random.Random(seed)
    labelled = kinds.of(task).labelled
    groups: dict = defaultdict(list)
    for ex in task.train:
        groups[ex.target if labelled else None].append(ex)
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


def training_pairs(task: Task, prompts, examples: Sequence[Example]) -> list[tuple[str, str]]:
    """(prompt, target text) pairs: exactly the inference prompt (no example among its own demonstrations)."""
    built, _, _ = prompts.build(examples, exclude_self=True)
    return [(p, target_text(task, ex.target)) for p, ex in zip(built, examples)]


def dev_metric(task: Task, prompts, dev: Sequence[Example], mode: str, new_tokens, constraint=None):
    """The task's primary metric on dev for a model being trained (select_on: dev_metric)."""
    built, _, _ = prompts.build(dev, exclude_self=True)

    def metric(tuned) -> float:  # the backend puts the model in eval mode around the call
        preds = inference.predict(task, tuned, dev, built, decode=mode, max_new_tokens=new_tokens,
                                  constraint=constraint)
        result = score_arm(task, dev, [p.output for p in preds])
        return result["metrics"][task.metric]
    return metric


CONF = Path(__file__).resolve().parent.parent / "conf" / "strategies"
RUNNER_KEYS = ("_target_", "defaults", "seeds", "model")  # read by Hydra or the runner, never passed to the arm
ARM_KEYS = ("dev_fraction", "select_on", "merge", "seed", "decode", "max_new_tokens", "template", "constrained")  # not training
# Training settings that bound memory without changing what is trained (the same gradient, summed in another order):
# left out of the arms' fingerprints and the trained artefacts' cache keys, so changing one neither refuses a resume
# nor retrains.
MEMORY_ONLY = ("max_step_tokens",)


@functools.cache
def _yaml_defaults() -> dict:
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(CONF / "lora.yaml"))
    return {k: v for k, v in data.items() if k not in RUNNER_KEYS}


def lora_defaults() -> dict:
    """The LoRA settings' defaults: conf/strategies/lora.yaml, their one source (combined.yaml and full_ft.yaml
    inherit them through Hydra defaults; code built outside Hydra, such as tests, reads them here)."""
    return copy.deepcopy(_yaml_defaults())


def arm_settings(given: Mapping[str, Any], name: str, own: Mapping[str, Any] | None = None) -> dict:
    """The given settings over the defaults (lora.yaml, plus an arm's `own` extra keys); an unknown key is refused
    with one line naming it."""
    known = {**lora_defaults(), **(own or {})}
    unknown = [k for k in given if k not in known]
    if unknown:
        raise ConfigError(f"unknown setting for arm {name!r} (known: {', '.join(known)})",
                          field=f"strategies.{name}.{unknown[0]}")
    return {**known, **given}


def cache_folder(cache_dir: Path, kind: str, key_parts: list) -> tuple[Path, str]:
    """Where a trained artefact of this kind lives, keyed by content (model, data, settings, seed). Each kind has
    its own folder and its name enters the key, so a LoRA adapter and a fully fine-tuned model never collide."""
    key = hashlib.sha256(json.dumps([kind, *key_parts], sort_keys=True, default=list).encode()).hexdigest()[:20]
    return Path(cache_dir) / ("adapters" if kind == "lora" else kind) / key, key


def train_cached(folder: Path, key: str, train: Callable[[Path], dict]) -> tuple[dict, bool]:
    """The training report of the artefact in folder, training it first (into a temporary folder renamed when
    complete) unless a finished one is there; a second run waits for, then reuses, the first's."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / "training.json").is_file():
            return read_json(folder / "training.json"), True
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
        try:  # an interrupted run leaves only this temporary folder: never used as finished
            training = train(tmp)
            write_json(tmp / "training.json", training)
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return training, False


def stop_words(training: dict) -> str:
    """'best 5, plateau': the chosen epoch and why training stopped, for summaries (older reports: best only)."""
    reason = training.get("stop_reason")
    return f"best {training['best_epoch']}" + (f", {reason}" if reason else "")


class LoRA(Strategy):
    """Settings: conf/strategies/lora.yaml (every key, with its default and meaning); missing keys take those
    defaults, unknown keys are refused."""

    def __init__(self, prompts=None, name: str = "lora", **settings):
        s = arm_settings(settings, name)
        if s["select_on"] not in ("dev_loss", "dev_metric"):
            raise ConfigError(f"must be dev_loss or dev_metric, got {s['select_on']!r}",
                              field=f"strategies.{name}.select_on")
        self.train_config = {k: tuple(v) if k == "target_modules" else v for k, v in s.items() if k not in ARM_KEYS}
        self.dev_fraction, self.select_on, self.merge, self.seed = (s["dev_fraction"], s["select_on"], s["merge"],
                                                                    s["seed"])
        self.decode, self.max_new_tokens, self.name = s["decode"], s["max_new_tokens"], name
        self.prompts = prompts or InstructionPrompts(template_from_config(s["template"]))
        self.constrained, self.constraint = constrained_decoding.parse_setting(s["constrained"], name), None
        self.lm = None  # the tuned model, after prepare

    def describe(self) -> dict:
        return {"kind": "lora", **{k: list(v) if isinstance(v, tuple) else v for k, v in self.train_config.items()
                                   if k not in MEMORY_ONLY},
                "dev_fraction": self.dev_fraction, "select_on": self.select_on, "merge": self.merge,
                "seed": self.seed, "decode": self.decode, "max_new_tokens": self.max_new_tokens,
                **self.prompts.describe(), **constrained_decoding.describe(self.constraint)}

    def check(self, task, lm) -> dict:
        """Refuse, before any arm runs, what the task or the arm's backend cannot do."""
        if TRAIN not in lm.capabilities:
            raise ConfigError(f"arm {self.name!r} trains an adapter, which its {lm.describe().get('backend', '?')} "
                              f"backend cannot do (use the transformers backend: model=hf or the default)",
                              field=f"strategies.{self.name}")
        self.mode = inference.resolve_decode(task, lm, self.decode, self.name)
        self.new_tokens = inference.max_new_tokens_for(task, lm, self.max_new_tokens, self.name)
        self.constraint, self.constraint_report = constrained_decoding.setup(task, lm, self.constrained, self.mode,
                                                                             self.name)
        return {"decode": self.mode, "max_new_tokens": self.new_tokens, "constrained": self.constraint_report}

    def prepare(self, ctx: PrepareContext) -> dict:
        self.task, base = ctx.task, ctx.lm
        if ctx.checked is None:  # not run by the runner's plan
            self.check(self.task, base)
        seed = ctx.seed if self.seed is None else self.seed
        train, dev, dev_source = split_dev(self.task, self.dev_fraction, seed)
        report = {"prompts": self.prompts.prepare(ctx), "dev": dev_source, "decode": self.mode,
                  "max_new_tokens": self.new_tokens, "constrained": self.constraint_report}
        train_pairs = self._pairs(train)
        dev_pairs = self._pairs(dev)
        settings = {k: v for k, v in self.describe().items()  # decoding alone does not change the adapter
                    if k != "constrained" or self.select_on == "dev_metric"}
        folder, key = cache_folder(ctx.cache_dir, "lora", [base.describe(), train_pairs, dev_pairs, settings, seed])
        training, cached = train_cached(folder, key, lambda out: base.train_adapter(
            train_pairs, dev_pairs, self.train_config, out, seed, ctx.progress,
            self._dev_metric(dev) if self.select_on == "dev_metric" else None))
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
        return (f"LoRA r={c['rank']}, {training['epochs_run']} ep ({stop_words(training)}), "
                f"{training['wall_s']:.0f}s train{' (cached)' if cached else ''}")

    def _pairs(self, examples: Sequence[Example]) -> list[tuple[str, str]]:
        return training_pairs(self.task, self.prompts, examples)

    def _dev_metric(self, dev: Sequence[Example]):
        return dev_metric(self.task, self.prompts, dev, self.mode, self.new_tokens, self.constraint)

    @property
    def tuned_lm(self):
        """The fine-tuned model this arm predicts with (the forgetting check scores it on a control set)."""
        return self.lm

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        return inference.predict_built(self.task, self.lm, examples, self.prompts.build, decode=self.mode,
                                       max_new_tokens=self.new_tokens, constraint=self.constraint)

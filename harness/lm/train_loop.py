"""The epoch loop of LoRA and full fine-tuning (harness.lm.training): the epoch plan and learning-rate schedule, one
epoch of optimizer steps, the dev evaluation after each epoch, and the stopping rule that keeps the best epoch."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from harness.lm.train_config import TrainConfig
from harness.lm.train_data import Encoded, batches, collate, micro_batches, target_loss

DevMetric = Callable[[torch.nn.Module], float]


class TrainingDiverged(RuntimeError):
    """Loss became NaN or exploded; the partial adapter is never used."""


@dataclass(frozen=True)
class EpochPlan:
    """How long training may run and when it stops: the epoch cap, the optimizer steps a plateau must wait for
    (epochs auto) and the patience."""

    steps_per_epoch: int    # batches
    updates_per_epoch: int  # optimizer steps
    epoch_cap: int
    floor: int              # optimizer steps before a plateau may stop training (0 with a fixed number of epochs)
    patience: int

    @classmethod
    def of(cls, cfg: TrainConfig, train_examples: int) -> EpochPlan:
        steps = math.ceil(train_examples / cfg.batch_size)
        updates = math.ceil(steps / cfg.grad_accum)
        if cfg.auto_epochs:
            return cls(steps, updates, cfg.max_epochs, cfg.min_steps, cfg.stop_patience)
        return cls(steps, updates, int(cfg.epochs), 0, cfg.stop_patience)

    def scheduler(self, optimizer, cfg: TrainConfig):
        if cfg.auto_epochs:
            # Warm-up, then a constant learning rate: a decaying schedule must know the number of updates in advance,
            # and "until the dev criterion stops improving" does not. Decaying over max_epochs instead would leave the
            # rate at an arbitrary point when the plateau comes (a different one for every train size).
            return get_constant_schedule_with_warmup(optimizer,
                                                     int(cfg.warmup_ratio * max(self.floor, self.updates_per_epoch)))
        total_updates = self.updates_per_epoch * self.epoch_cap
        return get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_updates), total_updates)

    def stops(self, bad_epochs: int, updates: int) -> bool:
        """The stopping rule: `patience` epochs without dev improvement, after at least `floor` optimizer steps."""
        return bad_epochs >= self.patience and updates >= self.floor  # the floor keeps a small train set training


def new_accelerator(precision: str, cpu: bool, grad_accum: int) -> Accelerator:
    """An Accelerator for one training run. accelerate keeps one state per process and refuses a second
    Accelerator with another mixed precision (an arm trained in fp32 after one in bf16, in one run or one test
    session), so the state is reset for a run whose precision differs from the one before."""
    state = AcceleratorState._shared_state
    if state and str(state.get("_mixed_precision", precision)) != precision:
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=precision, cpu=cpu, gradient_accumulation_steps=grad_accum)


@dataclass
class Fit:
    """One training run under way: the prepared model, optimizer and schedule, and what it has counted so far."""

    model: Any
    optimizer: Any
    scheduler: Any
    accelerator: Accelerator
    cfg: TrainConfig
    pad: int
    prefix: Sequence[int]
    trained_names: set[str]
    updates: int = 0
    tokens_seen: int = 0
    step_s: float = 0.0

    @classmethod
    def start(cls, lm, model, cfg: TrainConfig, precision: str, plan: EpochPlan, prefix: Sequence[int]) -> Fit:
        """AdamW on the trainable weights, the plan's schedule, accelerate's placement and autocast."""
        accelerator = new_accelerator(precision, lm.device.type == "cpu", cfg.grad_accum)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                      weight_decay=cfg.weight_decay)
        scheduler = plan.scheduler(optimizer, cfg)
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        trained = {n for n, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad}
        return cls(model, optimizer, scheduler, accelerator, cfg, lm.tokenizer.pad_token_id, prefix, trained)

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    def batch(self, examples: Sequence[Encoded]) -> dict:
        return collate(examples, self.pad, self.accelerator.device, self.prefix)

    def parts(self, examples: Sequence[Encoded]) -> list[dict]:
        """The batch as collated micro-batches within cfg.max_step_tokens (one when it fits)."""
        return [self.batch(part) for part in micro_batches(examples, self.cfg.max_step_tokens)]

    def trained_state(self) -> dict:
        """A copy of the trained weights (the adapter's, or every weight): the best epoch's, restored at the end."""
        return {k: v.detach().clone() for k, v in self.unwrapped.state_dict().items() if k in self.trained_names}


def train_epoch(fit: Fit, train: Sequence[Encoded], rng: random.Random, epoch: int,
                advance: Callable[[int], None] | None) -> float:
    """One pass over the training batches; the mean training loss per target token."""
    cfg, accelerator, model = fit.cfg, fit.accelerator, fit.model
    loss_sum, count = 0.0, 0
    for idx in batches(train, cfg.batch_size, rng, cfg.group_by_length):
        step_start = time.perf_counter()
        parts = fit.parts([train[i] for i in idx])
        # Every part's summed loss over the whole batch's target tokens: the parts' gradients add up to the batch's.
        n = sum(int((part["labels"][:, 1:] != -100).sum()) for part in parts)
        with accelerator.accumulate(model), accelerator.autocast():
            loss = 0.0
            for part in parts:
                part_loss, _ = target_loss(model, part, cfg.target_only_logits)
                accelerator.backward(part_loss / max(1, n))
                loss += float(part_loss.detach())
            per_token = loss / max(1, n)
            if not math.isfinite(per_token) or (count and per_token > 50):  # before the step: no weight changes
                raise TrainingDiverged(f"training loss became {per_token:.3g} in epoch {epoch}; "
                                       f"lower learning_rate (now {cfg.learning_rate})")
            if cfg.max_grad_norm and accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            fit.updates += int(accelerator.sync_gradients)
            fit.optimizer.step()
            fit.scheduler.step()
            fit.optimizer.zero_grad()
        loss_sum, count = loss_sum + loss, count + n
        fit.tokens_seen += sum(part["tokens"] for part in parts)
        fit.step_s += time.perf_counter() - step_start
        if advance:
            advance(1)
    return loss_sum / max(1, count)


def evaluate(fit: Fit, dev: Sequence[Encoded]) -> float:
    """The dev loss per target token (no dropout, the same batches every epoch)."""
    fit.model.eval()
    loss_sum, count = 0.0, 0
    with torch.no_grad(), fit.accelerator.autocast():
        for idx in batches(dev, fit.cfg.batch_size, random.Random(0), True):
            loss, n = target_loss(fit.model, fit.batch([dev[i] for i in idx]), True)
            loss_sum, count = loss_sum + float(loss), count + n
    fit.model.train()
    return loss_sum / max(1, count)


def epoch_record(fit: Fit, epoch: int, train_loss: float, dev: Sequence[Encoded], dev_metric: DevMetric | None) -> dict:
    """An epoch's entry in the history: its losses, the optimizer steps so far and the dev metric when one is
    given."""
    record = {"epoch": epoch, "train_loss": train_loss, "dev_loss": evaluate(fit, dev), "optimizer_steps": fit.updates}
    if dev_metric is not None:
        fit.model.eval()  # measured as the model will predict (no dropout)
        record["dev_metric"] = dev_metric(fit.unwrapped)
        fit.model.train()
    return record


def criterion(record: dict, dev_metric: DevMetric | None) -> float:
    """What the best epoch minimises: the dev loss, or minus the dev metric when one is given."""
    return -record["dev_metric"] if dev_metric is not None else record["dev_loss"]


def fit_epochs(fit: Fit, train: Sequence[Encoded], dev: Sequence[Encoded], rng: random.Random, plan: EpochPlan,
               dev_metric: DevMetric | None, advance: Callable[[int], None] | None) -> tuple[list[dict], dict, str]:
    """Epochs until the plan stops them: every epoch's record, the trained weights of the best epoch, and why
    training stopped."""
    history, best, best_state, bad_epochs = [], None, None, 0
    stop_reason = "max_epochs" if fit.cfg.auto_epochs else "fixed epochs"
    fit.model.train()
    for epoch in range(1, plan.epoch_cap + 1):
        record = epoch_record(fit, epoch, train_epoch(fit, train, rng, epoch, advance), dev, dev_metric)
        history.append(record)
        score = criterion(record, dev_metric)
        if best is None or score < best:
            best, bad_epochs, best_state = score, 0, fit.trained_state()
        else:
            bad_epochs += 1
        if plan.stops(bad_epochs, fit.updates):
            stop_reason = "plateau"
            break
    return history, best_state, stop_reason

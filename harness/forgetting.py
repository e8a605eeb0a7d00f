"""The catastrophic-forgetting check: the base model and each fine-tuned model answer the same control set, and
the decision reports the change with an interval (harness.decision.decide.forgetting).

The control set is the task's `control` split when it has one (scored like the held-out set, zero-shot), otherwise
the general multiple-choice set shipped in harness/data/general_control.jsonl (each choice's log-likelihood as the
answer to the bare question, cloze style, divided by its length in characters as lm-eval's acc_norm; the highest
is the model's answer). Listing the options in the prompt put the packaged 135M model at chance (0.250 on the 120
items) where the cloze form scored 0.533: small models copy an option rather than choose one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from harness import inference, scoring
from harness.errors import ConfigError
from harness.lm import SCORE
from harness.prompts import build_messages, template_from_config
from harness.task import Task

GENERAL_SET = Path(__file__).resolve().parent / "data" / "general_control.jsonl"
MC_SYSTEM = "Answer the question."
MC_METHOD = "cloze: system 'Answer the question.', the question as the user turn, choices scored as the answer, " \
            "log-likelihood per character, argmax"


@dataclass(frozen=True)
class ControlSet:
    name: str
    ids: tuple[str, ...]
    score: Callable[[object], list[float]]  # lm → one score per item (1/0 for accuracy)
    method: str = ""                         # how items are scored (control.json is recomputed when it changes)


def read_general(path: Path = GENERAL_SET) -> list[dict]:
    items = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
        if item.get("answer") not in item.get("choices", []):
            raise ConfigError(f"{path}:{line_no}: field 'answer' is not one of the choices")
        items.append(item)
    return items


def score_multiple_choice(lm, items: Sequence[dict]) -> list[float]:
    out = []
    for item in items:
        prompt = lm.render([{"role": "system", "content": MC_SYSTEM}, {"role": "user", "content": item["question"]}])
        logprobs = lm.score_choices([prompt], item["choices"])[0].logprobs
        normalised = [lp / max(1, len(choice)) for lp, choice in zip(logprobs, item["choices"])]
        out.append(float(item["choices"][max(range(len(normalised)), key=normalised.__getitem__)] == item["answer"]))
    return out


def load_control(task: Task, which: str = "auto", limit: int | None = None) -> ControlSet | None:
    """`auto`: the task's control split if any, else the general set; `task`, `general`, or `none`."""
    if which not in ("auto", "task", "general", "none"):
        raise ConfigError(f"must be auto, task, general or none, got {which!r}", field="forgetting.control")
    if which == "none":
        return None
    examples = task.split("control")
    if which == "task" and not examples:
        raise ConfigError(f"task {task.name} has no control split", field="forgetting.control")
    if examples and which in ("auto", "task"):
        examples = list(examples)[:limit] if limit else list(examples)
        template = template_from_config(None)

        def score_task(lm) -> list[float]:
            prompts = [lm.render(build_messages(task, template, ex)) for ex in examples]
            preds = inference.predict(task, lm, examples, prompts, max_new_tokens=64)
            result = scoring.score_arm(task, examples, [p.output for p in preds])
            key = scoring.per_example_key(task.type, task.metric)
            return [float(r[key]) for r in result["per_example"]]
        return ControlSet(f"{task.name} control split", tuple(ex.id for ex in examples), score_task,
                          f"zero-shot prompts, task metric {task.metric}")
    items = read_general()
    items = items[:limit] if limit else items

    def score_general(lm) -> list[float]:
        if SCORE not in lm.capabilities:
            raise ConfigError("the general control set needs a backend that scores choices", field="forgetting")
        return score_multiple_choice(lm, items)
    return ControlSet("general multiple-choice control set", tuple(i["id"] for i in items), score_general, MC_METHOD)

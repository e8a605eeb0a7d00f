"""An optional LLM judge for generation tasks: the task's rubric (task.yaml `judge.rubric`), asked of any configured
model through the one lm interface, PASS or FAIL per output (`judge_pass`, kept per example so arms can be paired).

Before its marks are used, the judge marks the task's hand-marked outputs (`judge.marked`); its agreement with the
people who marked them (share agreeing, Cohen's kappa) is recorded next to every figure it produced, with the judge's
model, prompt template and cost (tokens, seconds). A judge that cannot be parsed counts as FAIL and is counted.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.results import read_json, write_json
from harness.task import Example, Task

SYSTEM = """You are a strict reviewer. {rubric}
Reply with exactly one word: PASS or FAIL."""
USER = """Input:
{input}

Reference answer (one good answer; others can be good too):
{reference}

Output to review:
{output}"""
_VERDICT = re.compile(r"\b(PASS|FAIL)\b", re.I)


def messages(task: Task, example: Example, output: str) -> list[dict]:
    reference = example.target if isinstance(example.target, str) else "\n---\n".join(example.target)
    return [{"role": "system", "content": SYSTEM.format(rubric=task.judge["rubric"])},
            {"role": "user", "content": USER.format(input=example.input, reference=reference, output=output)}]


def parse(text: str) -> int | None:
    """1 for PASS, 0 for FAIL, None when the judge said neither (the first of the two words counts)."""
    m = _VERDICT.search(text or "")
    return None if m is None else int(m.group(1).upper() == "PASS")


def judge(lm, task: Task, pairs: Sequence[tuple[Example, str]], max_new_tokens: int = 4) -> list[dict]:
    """[{pass, raw, unparsed, input_tokens, output_tokens, latency_s}] for (example, output) pairs."""
    prompts = [lm.render(messages(task, ex, out)) for ex, out in pairs]
    out = []
    for gen in lm.generate(prompts, max_new_tokens):
        verdict = parse(gen.text)
        out.append({"pass": verdict or 0, "raw": gen.text[:40], "unparsed": verdict is None,
                    "input_tokens": gen.input_tokens, "output_tokens": gen.output_tokens, "latency_s": gen.latency_s})
    return out


def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> float | None:
    n = len(a)
    if not n:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    expected = pa * pb + (1 - pa) * (1 - pb)
    return None if expected == 1 else (observed - expected) / (1 - expected)


def agreement(lm, task: Task, max_new_tokens: int = 4) -> dict[str, Any]:
    """The judge on the task's hand-marked outputs: agreement with the human marks."""
    by_id = {ex.id: ex for split in ("heldout", "train", "dev") for ex in task.split(split)}
    marked = [m for m in task.judge["marked"] if m["example_id"] in by_id]
    if not marked:
        return {"n": 0, "note": "no hand-marked outputs for examples in this run's data"}
    verdicts = judge(lm, task, [(by_id[m["example_id"]], m["output"]) for m in marked], max_new_tokens)
    human = [int(m["mark"] == "PASS") for m in marked]
    machine = [v["pass"] for v in verdicts]
    return {"n": len(marked), "file": task.judge["marked_file"],
            "agreement": sum(h == j for h, j in zip(human, machine)) / len(marked),
            "cohen_kappa": cohen_kappa(human, machine),
            "judge_pass_rate": sum(machine) / len(marked), "human_pass_rate": sum(human) / len(marked),
            "unparsed": sum(v["unparsed"] for v in verdicts), "usage": usage(verdicts),
            "items": [{"id": m["id"], "human": m["mark"], "judge": v["raw"]} for m, v in zip(marked, verdicts)]}


def usage(verdicts: Sequence[Mapping]) -> dict[str, float]:
    return {k: sum(v[k] for v in verdicts) for k in ("input_tokens", "output_tokens", "latency_s")}


def agreement_file(lm, task: Task, path: Path, max_new_tokens: int = 4) -> dict:
    """`agreement` with the judge's model, prompt and rubric, written to `path` and reused while they are the same
    (its `key` also keys the per-arm verdicts)."""
    key = hashlib.sha256(json.dumps([lm.describe(), task.judge["rubric"], [dict(m) for m in task.judge["marked"]],
                                     SYSTEM, USER, max_new_tokens], sort_keys=True, default=str).encode()).hexdigest()[:16]
    if path.exists() and read_json(path).get("key") == key:
        return read_json(path)
    result = {"key": key, "model": lm.describe(), "rubric": task.judge["rubric"],
              "prompt": {"system": SYSTEM, "user": USER}, "agreement": agreement(lm, task, max_new_tokens)}
    write_json(path, result)
    return result


def judge_file(lm, task: Task, records: Mapping[str, Mapping], path: Path, key: str, chunk: int = 16,
               max_new_tokens: int = 4) -> dict[str, int]:
    """Judge an arm's held-out outputs, appending to `path` every `chunk` verdicts (a rerun judges only what is
    missing); returns {example id: 1 PASS / 0 FAIL}."""
    done = read_json(path) if path.exists() else {}
    if done.get("key") != key:
        done = {"key": key, "verdicts": {}}
    todo = [ex for ex in task.heldout if ex.id not in done["verdicts"]]
    for s in range(0, len(todo), chunk):
        batch = todo[s:s + chunk]
        for ex, verdict in zip(batch, judge(lm, task, [(ex, records[ex.id]["output"]) for ex in batch],
                                            max_new_tokens)):
            done["verdicts"][ex.id] = verdict
        write_json(path, done)
    verdicts = [done["verdicts"][ex.id] for ex in task.heldout]
    done.update(usage=usage(verdicts), unparsed=sum(v["unparsed"] for v in verdicts))
    write_json(path, done)
    return {ex.id: done["verdicts"][ex.id]["pass"] for ex in task.heldout}

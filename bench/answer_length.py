"""Answer length and fact recall per arm on a dev split of hr_policy_qa (never its held-out set): the last 60 of the
251 train questions are held out of a temporary copy of the task, the first 191 stay as train.

Each arm generates once without any stop; "ended" is the same greedy output cut at the first line break and after
one sentence (greedy decoding: identical to a stopped generation, which counts one token past the end).

Usage: python bench/answer_length.py [--n 16] [--arms system question prompt_only]
(system / question: the retrieval arm's knowledge layouts; prompt_only: 10-shot.) Figures in docs/results.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness.lm import cut_answer
from harness.lm.hf import TransformersLM
from harness.retriever import Retriever
from harness.scoring import score_arm
from harness.strategy import PrepareContext
from harness.task import load_task
from strategies.prompt_only import PromptOnly
from strategies.retrieval import Retrieval

ROOT = Path(__file__).resolve().parent.parent
TASK = ROOT / "tasks" / "hr_policy_qa"


def dev_task(folder: Path, n: int):
    lines = (TASK / "train.jsonl").read_text().splitlines()
    (folder / "task.yaml").write_text((TASK / "task.yaml").read_text())
    (folder / "train.jsonl").write_text("\n".join(lines[:191]) + "\n")
    (folder / "heldout.jsonl").write_text("\n".join(lines[191:]) + "\n")
    (folder / "knowledge.jsonl").write_text((TASK / "knowledge.jsonl").read_text())
    return load_task(folder, limit_heldout=n, sample="stratified")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--arms", nargs="+", default=["system", "question", "prompt_only"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        task = dev_task(Path(tmp), args.n)
        lm = TransformersLM("packaged:smollm2-135m-instruct")
        examples = list(task.heldout)
        for arm in args.arms:
            start = time.perf_counter()
            strategy = (PromptOnly(shots=10, name="prompt_only") if arm == "prompt_only" else
                        Retrieval(Retriever(), mode="knowledge", shots=3, layout=arm, name="retrieval"))
            strategy.prepare(PrepareContext(task, lm, Path(tmp) / "w", Path.home() / ".cache" / "harness", 0,
                                            lambda d, t: (lambda n=1: None)))
            prompts = ([strategy._prompt(ex) for ex in examples] if arm == "prompt_only"
                       else strategy.prompts.build(examples)[0])
            gens = lm.generate(prompts, strategy.new_tokens)  # no stop: the answers as the model gives them
            seconds = time.perf_counter() - start
            for label, outputs in (("as generated", [g.text for g in gens]),
                                   ("ended", [cut_answer(g.text, ["\n"], 1) for g in gens])):
                m = score_arm(task, examples, outputs)["metrics"]
                tokens = ([g.output_tokens for g in gens] if label == "as generated"
                          else [lm.count_tokens(o) for o in outputs])
                print(f"{arm:12s} {label:13s} fact_recall {m['fact_recall']:.3f} answer_exact "
                      f"{m['answer_exact']:.3f} token_f1 {m['token_f1']:.3f} output tokens {statistics.mean(tokens):.1f}"
                      f" prompt tokens {statistics.mean(lm.count_tokens(p) for p in prompts):.0f} ({seconds:.0f} s)",
                      flush=True)


if __name__ == "__main__":
    main()

"""Benchmark: the same held-out generations on the packaged model through the three backends, side by side in one run.

(a) transformers (the converted fp32 model, batched greedy generation);
(b) llama.cpp in-process (llama-cpp-python on the packaged Q4_1 GGUF);
(c) llama.cpp's OpenAI-compatible server over HTTP on 127.0.0.1 (the same GGUF; response cache off).
Prints examples/s and generated tokens/s of each, the speed-ups over (a), and how many outputs equal (a)'s exactly.

Usage: python bench/backends.py [--task supplier_intake] [--n 24] [--shots 2] [--max-new-tokens 128]
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from pathlib import Path

from harness.lm.server import LlamaServer
from harness.lm.hf import TransformersLM
from harness.lm.http import HTTPChatLM
from harness.lm.llamacpp import LlamaCppLM
from harness.prompts import PromptTemplate, build_messages, pick_demos
from harness.provenance import cpu_info
from harness.task import load_task

ROOT = Path(__file__).resolve().parent.parent
print = functools.partial(print, flush=True)  # noqa: A001


def run(lm, messages, max_new_tokens: int) -> tuple[list, float]:
    prompts = [lm.render(m) for m in messages]
    start = time.perf_counter()
    gens = lm.generate(prompts, max_new_tokens)
    return gens, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="supplier_intake")
    ap.add_argument("--n", type=int, default=24, help="held-out examples")
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--model", default="packaged:smollm2-135m-instruct")
    args = ap.parse_args()
    cache = Path(os.environ.get("HARNESS_CACHE", "~/.cache/harness")).expanduser()
    task = load_task(ROOT / "tasks" / args.task, limit_heldout=args.n)
    demos = pick_demos(task, args.shots, 0)
    messages = [build_messages(task, PromptTemplate(), ex, demos) for ex in task.heldout]
    print(f"{args.task}: {len(messages)} held-out prompts, {args.shots}-shot, greedy, ≤ {args.max_new_tokens} new "
          f"tokens; {args.model} on {cpu_info()}")
    results = {}
    hf = TransformersLM(args.model, cache_dir=str(cache))
    run(hf, messages[:2], 8)  # warm-up
    results["transformers"] = run(hf, messages, args.max_new_tokens)
    del hf
    lc = LlamaCppLM(args.model, cache_dir=str(cache), n_ctx=4096)
    run(lc, messages[:2], 8)
    results["llama.cpp in-process"] = run(lc, messages, args.max_new_tokens)
    lc.close()
    with LlamaServer(args.model, cache_dir=str(cache), n_ctx=4096) as server:
        http = HTTPChatLM(server.base_url, "served", concurrency=1, cache=False)
        run(http, messages[:2], 8)
        results["llama.cpp server (HTTP)"] = run(http, messages, args.max_new_tokens)
        http.close()
    base_gens, base_s = results["transformers"]
    print(f"\n{'backend':<26}{'examples/s':>11}{'gen tok/s':>11}{'speed-up':>10}{'same text as (a)':>18}")
    for name, (gens, seconds) in results.items():
        tokens = sum(g.output_tokens for g in gens)
        same = sum(g.text == b.text for g, b in zip(gens, base_gens))
        print(f"{name:<26}{len(gens) / seconds:>11.2f}{tokens / seconds:>11.1f}{base_s / seconds:>9.2f}×"
              f"{same:>12} / {len(gens)}")


if __name__ == "__main__":
    main()

"""Benchmark of the retrieval layer on this machine, in one run:

- encoding throughput of the embedder (sentences/s) on the demo tasks' real texts;
- index build time and single-query latency p50/p99 at 10k and 100k vectors for flat (exact), HNSW and IVF, with
  the approximate indexes' recall@10 against the exact one (random unit vectors of the embedder's dimension:
  encoding 100k real sentences would take minutes and measure the embedder again, not the index);
- a cold build of the hr_policy_qa knowledge index (embed + index) against the cached rebuild;
- retrieval quality on real data: recall@1/5 and MRR of the held-out queries of covid_faq (../shared) and of
  hr_policy_qa against their gold documents.

Usage: python bench/retrieval.py [--sizes 10000 100000] [--queries 500]
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.provenance import cpu_info
from harness.retriever import Retriever

ROOT = Path(__file__).resolve().parent.parent
print = functools.partial(print, flush=True)  # noqa: A001


def texts() -> list[str]:
    out = []
    for path in [ROOT / "tasks" / "support_triage" / "train.jsonl", ROOT / "tasks" / "hr_policy_qa" / "train.jsonl"]:
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            out.append(rec.get("text") or rec.get("question"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=500)
    args = ap.parse_args()
    cpu = cpu_info()
    print(f"CPU: {cpu['model']} ({cpu['cores']} cores)")

    r = Retriever()
    sample = texts()
    r.encode(sample[:32])  # warm-up
    t = time.perf_counter()
    r.encode(sample)
    dt = time.perf_counter() - t
    mean_words = sum(len(s.split()) for s in sample) / len(sample)
    print(f"encoding: {len(sample)} sentences ({mean_words:.0f} words on average) in {dt:.2f} s = "
          f"{len(sample) / dt:.0f} sentences/s")

    dim = r.model.get_embedding_dimension()
    rng = np.random.default_rng(0)
    print(f"\nindexes over random unit vectors, dim {dim}, {args.queries} single queries (each a stored vector plus "
          f"noise), k=10; hit@1: the planted vector found first; recall@10: overlap with the exact top 10")
    print(f"{'n':>8} {'index':>6} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} {'hit@1':>7} {'recall@10':>10}")
    for n in args.sizes:
        vectors = rng.normal(size=(n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        planted = rng.choice(n, args.queries, replace=False)
        queries = vectors[planted] + 0.05 * rng.normal(
            size=(args.queries, dim)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        exact = None
        for kind in ("flat", "hnsw", "ivf"):
            retriever = Retriever(index=kind)
            t = time.perf_counter()
            index = retriever._new_index(vectors)
            build = time.perf_counter() - t
            retriever.tune(index)
            latencies, found = [], []
            for q in queries:
                t = time.perf_counter()
                _, ids = index.search(q[None, :], 10)
                latencies.append((time.perf_counter() - t) * 1000)
                found.append(ids[0])
            found = np.array(found)
            if exact is None:
                exact = found
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])
            hit = np.mean(found[:, 0] == planted)
            p50, p99 = np.percentile(latencies, [50, 99])
            print(f"{n:>8} {kind:>6} {build:>8.2f} {p50:>8.3f} {p99:>8.3f} {hit:>7.3f} {recall:>10.3f}")

    docs = [json.loads(line) for line in (ROOT / "tasks" / "hr_policy_qa" / "knowledge.jsonl").read_text().splitlines()]
    with tempfile.TemporaryDirectory() as cache:
        passages, _ = r.chunk([(d["id"], d["title"] + "\n" + d["text"]) for d in docs])
        t = time.perf_counter()
        cold = r.build(passages, Path(cache))
        t_cold = time.perf_counter() - t
        t = time.perf_counter()
        warm = r.build(passages, Path(cache))
        t_warm = time.perf_counter() - t
    print(f"\nhr_policy_qa knowledge ({len(passages)} passages): cold build {t_cold * 1000:.0f} ms "
          f"({cold.built['embeddings']}/{cold.built['index']}), cached rebuild {t_warm * 1000:.1f} ms "
          f"({warm.built['embeddings']}/{warm.built['index']}), {t_cold / t_warm:.0f}x faster")

    from harness.scoring import retrieval_metrics
    from harness.task import load_task

    print("\nretrieval quality (exact flat index, k=5):")
    for name in ("covid_faq", "hr_policy_qa"):
        try:
            task = load_task(ROOT / "tasks" / name)
        except Exception as e:  # ../shared missing: say so, measure the rest
            print(f"  {name}: skipped ({e})")
            continue
        docs = [(d.id, (str(d.meta["title"]) + "\n" if d.meta.get("title") else "") + d.input)
                for d in task.split("knowledge")]
        passages, _ = r.chunk(docs)
        with tempfile.TemporaryDirectory() as cache:
            corpus = r.build(passages, Path(cache))
            hits = r.search(corpus, [ex.input for ex in task.heldout], 5)
        m = retrieval_metrics([list(ex.meta["doc_ids"]) for ex in task.heldout],
                              [[p.doc_id for p, _ in found] for found in hits])
        print(f"  {name}: {len(task.heldout)} queries over {len(docs)} documents ({len(passages)} passages): "
              f"recall@1 {m['recall@1']:.3f}  recall@5 {m['recall@5']:.3f}  MRR {m['mrr']:.3f}")


if __name__ == "__main__":
    main()

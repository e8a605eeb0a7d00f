"""Scoring, owned by the harness: one entry, `score_arm`, for every caller (the runner, LoRA's dev metric, the
forgetting check, the embedding classifier's choice of C), kept per example so arms can be paired.

What a task's outputs are worth is its task kind's (harness/kinds: parsing, per-example records, the metrics of
the kind); here per-example values measured elsewhere (embedding cosine, the judge, retrieval recall) are joined
and every metric is aggregated, from fresh scores and from recorded ones alike (`aggregate`).
Pure functions: records in, numbers out. No torch, no strategy imports.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from harness import kinds
from harness.kinds.base import mean

RETRIEVAL_MEAN_OF = {"mrr": "reciprocal_rank"}  # and recall@k, the mean of `recall@k`; for arms that retrieve


def mean_key(metric: str) -> str | None:
    """The per-example key a metric averages (recall@k averages `recall@k`), or None for a ratio metric (macro_f1,
    field_f1). Metric names mean the same in every task kind (harness.kinds.register checks it)."""
    if metric.startswith("recall@"):
        return metric
    if metric in RETRIEVAL_MEAN_OF:
        return RETRIEVAL_MEAN_OF[metric]
    return next((kinds.get(name).mean_of[metric] for name in kinds.names() if metric in kinds.get(name).mean_of),
                None)


def per_example_key(task_type: str, metric: str) -> str:
    """The per-example value of a metric: the one it averages, or the one that stands for a ratio metric
    (macro_f1 → correct, field_f1 → field_accuracy)."""
    return mean_key(metric) or kinds.get(task_type).proxy_of[metric]


def aggregate(task_type: str, records: Sequence[Mapping], labels: Sequence[str] = ()) -> dict[str, float]:
    """Every metric of a task kind from per-example records (and recall@k / MRR where they hold retrieval
    values): the one place metrics are computed, used for the point estimates and for bootstrap resamples alike."""
    records = list(records)
    if not records:
        return {}
    metrics = kinds.get(task_type).aggregate(records, labels)
    metrics.update(retrieval_means(records))
    return metrics


def retrieval_means(records: Sequence[Mapping]) -> dict[str, float]:
    """recall@k and MRR over per-example records that hold retrieval values (retrieval_per_example's keys); {}
    when they hold none."""
    if not records:
        return {}
    means = {k: mean(records, k) for k in sorted(k for k in records[0] if k.startswith("recall@"))}
    if "reciprocal_rank" in records[0]:
        means["mrr"] = mean(records, "reciprocal_rank")
    return means


def score_arm(task: Any, examples: Sequence[Any], outputs: Sequence[str],
              measures: Mapping[str, Sequence[Any]] | None = None) -> dict:
    """Score an arm's raw outputs for examples of a task (harness.task.Task), in example order: {"metrics",
    "per_example", "details"}. `measures` ({key: one value per example}) are joined into the per-example records
    before the metrics are aggregated (embedding_cosine, judge_pass, recall@k …)."""
    if len(examples) != len(outputs):
        raise ValueError(f"{len(examples)} examples but {len(outputs)} outputs")
    result = kinds.of(task).score(task, examples, outputs)
    per_example = result["per_example"]
    for key, values in (measures or {}).items():
        if len(values) != len(per_example):
            raise ValueError(f"{len(values)} values of {key!r} for {len(per_example)} examples")
        for record, value in zip(per_example, values):
            record[key] = value
    metrics = aggregate(task.type, per_example, task.labels) if measures else result["metrics"]
    return {"metrics": metrics, "per_example": per_example, "details": result["details"]}


def retrieval_per_example(gold: Sequence[Sequence[str]], ranked: Sequence[Sequence[str]],
                           ks: Sequence[int] = (1, 5)) -> list[dict]:
    """Per example: recall@k (share of its gold documents in the top k) and the reciprocal rank of the first gold
    document (repeated ids, e.g. several chunks of one document, count at their first rank)."""
    out = []
    for gold_ids, ranking in zip(gold, ranked):
        docs = list(dict.fromkeys(ranking))
        gold_set = set(gold_ids)
        rank = next((i for i, d in enumerate(docs, start=1) if d in gold_set), None)
        out.append({**{f"recall@{k}": len(gold_set & set(docs[:k])) / len(gold_set) for k in ks},
                    "reciprocal_rank": 1 / rank if rank else 0.0})
    return out


def retrieval_metrics(gold: Sequence[Sequence[str]], ranked: Sequence[Sequence[str]], ks: Sequence[int] = (1, 5)) -> dict:
    """recall@k and MRR averaged over examples (see retrieval_per_example)."""
    return retrieval_means(retrieval_per_example(gold, ranked, ks))

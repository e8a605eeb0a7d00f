"""Bootstrap samples of every metric of an arm, vectorised over resamples. For the full index set each sample
equals `harness.scoring.aggregate` (tested), so intervals and point estimates come from the same definitions.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from harness import scoring


def _macro_f1(gold: np.ndarray, pred: np.ndarray, n_labels: int, idx: np.ndarray) -> np.ndarray:
    """Macro-F1 per resample from a (resamples × n) index matrix; label code n_labels means invalid."""
    side = n_labels + 1
    rows = idx.shape[0]
    codes = (np.arange(rows)[:, None] * side * side + gold[idx] * side + pred[idx]).ravel()
    counts = np.bincount(codes, minlength=rows * side * side).reshape(rows, side, side)[:, :n_labels, :]
    tp = np.einsum("bii->bi", counts[:, :, :n_labels])
    fn = counts.sum(axis=2) - tp                    # gold label, predicted anything else (incl. invalid)
    fp = counts[:, :, :n_labels].sum(axis=1) - tp   # predicted label, gold anything else
    present = (tp + fn + fp) > 0
    f1 = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return np.where(present.any(axis=1), (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1), 0.0)


def metric_samples(task_type: str, records: Sequence[Mapping], idx: np.ndarray,
                   labels: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """{metric: one value per row of idx} for every metric `scoring.aggregate` reports for these records."""
    names = scoring.aggregate(task_type, records[:1], labels) if records else {}
    out = {}
    for metric in names:
        key = scoring.mean_key(metric)
        if key is not None:
            out[metric] = np.asarray([float(r[key]) for r in records])[idx].mean(axis=1)
        elif metric == "macro_f1":
            code = {label: i for i, label in enumerate(labels)}
            gold = np.asarray([code[r["gold"]] for r in records])
            pred = np.asarray([code.get(r["parsed"], len(labels)) for r in records])
            out[metric] = _macro_f1(gold, pred, len(labels), idx)
        elif metric == "field_f1":
            tp, fp, fn = (np.asarray([r[k] for r in records], dtype=float)[idx].sum(axis=1) for k in ("tp", "fp", "fn"))
            out[metric] = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12), 0.0)
        else:
            raise ValueError(f"no bootstrap rule for metric {metric!r}")
    return out


def per_example_values(records: Sequence[Mapping], metric: str) -> np.ndarray | None:
    """The per-example values a mean-type metric averages (for paired tests), or None for ratio metrics."""
    key = scoring.mean_key(metric)
    return None if key is None else np.asarray([float(r[key]) for r in records])

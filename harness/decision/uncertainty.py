"""Bootstrap samples of every metric of an arm, vectorised over resamples. For the full index set each sample
equals `harness.scoring.aggregate` (tested), so intervals and point estimates come from the same definitions.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from harness import kinds, scoring


def metric_samples(task_type: str, records: Sequence[Mapping], idx: np.ndarray,
                   labels: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """{metric: one value per row of idx} for every metric `scoring.aggregate` reports for these records."""
    names = scoring.aggregate(task_type, records[:1], labels) if records else {}
    out = {}
    for metric in names:
        key = scoring.mean_key(metric)
        if key is not None:
            out[metric] = np.asarray([float(r[key]) for r in records])[idx].mean(axis=1)
        else:  # a ratio metric (macro_f1, field_f1): its task kind resamples it
            out[metric] = kinds.get(task_type).bootstrap(metric, records, idx, labels)
    return out


def per_example_values(records: Sequence[Mapping], metric: str) -> np.ndarray | None:
    """The per-example values a mean-type metric averages (for paired tests), or None for ratio metrics."""
    key = scoring.mean_key(metric)
    return None if key is None else np.asarray([float(r[key]) for r in records])

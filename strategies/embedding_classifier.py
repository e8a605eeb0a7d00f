"""Embedding classifier, no LLM: the retrieval arm's sentence embedder turns each input into a vector and a
scikit-learn logistic regression (balanced class weights, C chosen on a dev split) maps the vector to a label.

The cheapest honest baseline of a classification task (Casanueva et al. 2020 on banking77): when it scores as well
as the LLM arms, the answer is "neither fine-tuning nor an LLM". It changes no LLM's weights, so the verdict counts
it among the arms without fine-tuning; its fit time is its one-off setup cost, its measured time per request its
serving cost. Train embeddings share the retriever's content-keyed cache (the same entry as the retrieval arm's
demonstration index); the regression itself refits in well under a second, so it is not cached.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import TYPE_CHECKING, Sequence

import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from harness import kinds
from harness.errors import ConfigError
from harness.scoring import score_arm
from harness.sampling import subset
from harness.strategy import PrepareContext, Prediction, Strategy
from harness.task import Example, Task

if TYPE_CHECKING:  # the retriever is built by Hydra from the arm's config and handed in
    from harness.retriever import Retriever

DEFAULT_C = 10.0   # used when the train split is too small to carve a dev split from
MIN_DEV = 2


def choose_c(scores: dict[float, float], losses: dict[float, float] | None = None) -> float:
    """The C with the best dev score (the task's primary metric); ties, common on a small dev split, go to the lower
    dev log-loss (a finer reading of the same predictions), then to the smaller C."""
    losses = losses or {}
    return min(scores, key=lambda c: (-scores[c], losses.get(c, 0.0), c))


def log_loss(model: LogisticRegression, vectors: np.ndarray, targets: Sequence[str]) -> float:
    """Mean negative log-probability of the true label, over the dev examples whose label the model has seen."""
    column = {str(label): i for i, label in enumerate(model.classes_)}
    rows = [(i, column[t]) for i, t in enumerate(targets) if t in column]
    if not rows:
        return float("inf")
    log_p = model.predict_log_proba(vectors)
    return float(-np.mean([log_p[i, j] for i, j in rows]))


class EmbeddingClassifier(Strategy):
    """Sentence embeddings + logistic regression; no LLM is loaded or called."""

    uses_llm = False  # a run whose arms are all LLM-free does not load the run's model

    def __init__(self, retriever: Retriever, c_grid: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
                 dev_fraction: float = 0.2, max_iter: int = 2000, seed: int | None = None,
                 name: str = "embedding_classifier"):
        self.name, self.retriever = name, retriever
        grid = list(c_grid) if isinstance(c_grid, Sequence) and not isinstance(c_grid, str) else [c_grid]
        if not grid or any(isinstance(c, bool) or not isinstance(c, (int, float)) or not c > 0 for c in grid):
            raise ConfigError(f"must be a list of positive numbers, got {c_grid!r}", field=f"strategies.{name}.c_grid")
        if not 0 < dev_fraction < 1:
            raise ConfigError(f"must be between 0 and 1, got {dev_fraction!r}", field=f"strategies.{name}.dev_fraction")
        self.c_grid, self.dev_fraction, self.max_iter, self.seed = [float(c) for c in grid], float(dev_fraction), \
            int(max_iter), seed
        self.classifier: LogisticRegression | None = None

    @property
    def arm_model(self) -> dict:
        """What the tables name as this arm's model (`backend: name`), instead of the run's LLM."""
        return {"backend": "no LLM", "name_or_path": f"{self.retriever.embedder} + logistic regression"}

    def describe(self) -> dict:
        return {"kind": "embedding_classifier", "embedder": self.retriever.embedder, "c_grid": self.c_grid,
                "class_weight": "balanced", "select_c": "dev primary metric, ties by dev log-loss",
                "dev_fraction": self.dev_fraction, "max_iter": self.max_iter, "seed": self.seed,
                "scikit_learn": sklearn.__version__}

    def check(self, task: Task, lm=None) -> dict:
        """Refuse tasks whose answers are not labels (one line naming the arm)."""
        if not kinds.of(task).labelled:
            raise ConfigError(f"arm {self.name!r} predicts labels, so it needs a classification task; {task.name} "
                              f"is {task.type}", field=f"strategies.{self.name}")
        if len({ex.target for ex in task.train}) < 2:
            raise ConfigError(f"arm {self.name!r} needs train examples of at least 2 labels", field="train")
        return {}

    # ---- fitting --------------------------------------------------------------------------------------------
    def _dev_split(self, task: Task, seed: int) -> tuple[list[Example], list[Example], str]:
        """The task's dev split, or a seeded stratified carve of train (task.subset, by label); ([], [], why) when
        train is too small for one."""
        if task.split("dev"):
            return list(task.train), list(task.split("dev")), "task dev split"
        n_dev = round(self.dev_fraction * len(task.train))
        dev = subset(task.train, n_dev, "stratified", seed, by_label=True) if n_dev >= MIN_DEV else ()
        dev_ids = {ex.id for ex in dev}
        fit = [ex for ex in task.train if ex.id not in dev_ids]
        if len(dev) < MIN_DEV or len({ex.target for ex in fit}) < 2:
            return [], [], f"train of {len(task.train)} too small to carve a dev split: C={DEFAULT_C:g} unselected"
        return fit, list(dev), f"{len(dev)} carved from train (stratified, seed {seed})"

    def _fit(self, vectors: np.ndarray, labels: Sequence[str], c: float) -> tuple[LogisticRegression, bool]:
        """A balanced logistic regression; whether lbfgs stopped at max_iter before converging."""
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=self.max_iter)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(vectors, list(labels))
        return model, any(issubclass(w.category, ConvergenceWarning) for w in caught)

    def _embed(self, examples: Sequence[Example], ctx: PrepareContext, what: str) -> tuple[np.ndarray, str]:
        passages = self.retriever.whole([(ex.id, ex.input) for ex in examples])
        vectors, _, state = self.retriever.embed(passages, ctx.cache_dir, ctx.progress, what)
        return vectors, state

    def prepare(self, ctx: PrepareContext) -> dict:
        task = self.task = ctx.task
        if ctx.checked is None:  # not run by the runner's plan
            self.check(task)
        seed = ctx.seed if self.seed is None else int(self.seed)
        start = time.perf_counter()
        train_vecs, train_state = self._embed(task.train, ctx, "embed train")
        fit, dev, dev_source = self._dev_split(task, seed)
        row = {ex.id: i for i, ex in enumerate(task.train)}
        embedded = {"train": train_state}
        if task.split("dev"):
            dev_vecs, embedded["dev"] = self._embed(dev, ctx, "embed dev")
        else:
            dev_vecs = train_vecs[[row[ex.id] for ex in dev]] if dev else None
        embed_s = time.perf_counter() - start
        scores, losses, unconverged = {}, {}, []
        start = time.perf_counter()
        if dev:
            fit_vecs = train_vecs[[row[ex.id] for ex in fit]]
            for c in self.c_grid:
                model, stopped = self._fit(fit_vecs, [ex.target for ex in fit], c)
                outputs = [str(label) for label in model.predict(dev_vecs)]
                scores[c] = float(score_arm(task, dev, outputs)["metrics"][task.metric])
                losses[c] = log_loss(model, dev_vecs, [ex.target for ex in dev])
                if stopped:
                    unconverged.append(c)
        chosen = choose_c(scores, losses) if scores else DEFAULT_C
        select_s = time.perf_counter() - start
        start = time.perf_counter()
        self.classifier, stopped = self._fit(train_vecs, [ex.target for ex in task.train], chosen)
        fit_s = time.perf_counter() - start
        dev_text = f", dev {task.metric} {scores[chosen]:.3f}" if scores else ", no dev selection"
        return {"summary": f"{self.retriever.embedder.replace('packaged:', '')} + logistic regression, "
                           f"C={chosen:g}{dev_text}",
                "chosen_c": chosen, "dev": {"source": dev_source, "n": len(dev), "metric": task.metric,
                                            "scores_by_c": {f"{c:g}": s for c, s in scores.items()},
                                            "log_loss_by_c": {f"{c:g}": v for c, v in losses.items()}},
                "fit_examples": len(fit), "train_examples": len(task.train),
                "labels_in_train": len(self.classifier.classes_), "embeddings": embedded,
                "unconverged_c": unconverged + ([f"final C={chosen:g}"] if stopped else []),
                "embed_s": embed_s, "select_s": select_s, "fit_s": fit_s}

    # ---- predicting -----------------------------------------------------------------------------------------
    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        """Labels and their log-probabilities; each example's latency is its share of the batch's embed + predict
        time (the batched throughput the cost model prices)."""
        start = time.perf_counter()
        log_probs = self.classifier.predict_log_proba(self.retriever.encode([ex.input for ex in examples]))
        share = (time.perf_counter() - start) / max(1, len(examples))
        labels = [str(c) for c in self.classifier.classes_]
        preds = []
        for ex, row in zip(examples, log_probs):
            best = int(np.argmax(row))
            preds.append(Prediction(ex.id, labels[best], ex.input,
                                    {"input_tokens": 0, "output_tokens": 0, "latency_s": share},
                                    scores={label: round(float(v), 5) if math.isfinite(v) else -1e9
                                            for label, v in zip(labels, row)}))
        return preds

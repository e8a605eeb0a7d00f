"""The Strategy protocol every arm implements, and the records it returns. Types only, no behaviour."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from harness.task import Example, Task


@dataclass
class Prediction:
    """One held-out prediction as a strategy produced it. The harness scores `output`; it never trusts a
    strategy's own judgement of correctness."""

    id: str
    output: str                     # label for scored classification, raw text otherwise
    prompt: str                     # the prompt exactly as sent to the model
    usage: dict[str, Any]           # input_tokens, output_tokens, latency_s, truncated, ...
    scores: dict[str, float] | None = None      # per-label scores when labels were scored
    retrieved: list[dict] | None = None         # retrieved ids and scores, when the strategy retrieves
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}


@dataclass
class PrepareContext:
    """What the runner hands a strategy: the task, the arm's model, a private work folder and the seed."""

    task: Task
    lm: Any                 # harness.lm.LM
    workdir: Path
    cache_dir: Path
    seed: int
    progress: Callable[[str, int], Callable[[int], None]]  # (description, total) -> advance(n)


class Strategy(Protocol):
    """Built by Hydra from `conf/strategies/NAME.yaml` (`_target_`) with `name=<arm name>` added, so messages and
    config errors can name the arm. An arm that changes the model's weights also exposes `tuned_lm` (the LM it
    predicts with after prepare), which the forgetting check scores on a control set. An arm that uses no LLM (the
    embedding classifier) sets `uses_llm = False` on its class (a run of only such arms loads no LLM) and exposes
    `arm_model`, the model description its results carry instead of the LLM's (`{"backend": "no LLM", ...}`)."""

    def check(self, task: Task, lm: Any) -> None:
        """Refuse, before any arm runs, what the task or the arm's model backend cannot do (ConfigError naming the
        arm and the capability)."""

    def prepare(self, ctx: PrepareContext) -> dict:
        """Build what predictions need (demos, index, adapter); return a JSON-able report (prepare.json)."""

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        """Predict a batch of held-out examples (inputs only are used; targets are the harness's)."""

    def describe(self) -> dict:
        """Settings that define this arm (recorded, and fingerprinted for resume)."""

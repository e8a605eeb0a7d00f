"""The Strategy protocol every arm implements, and the records it returns. Types only, no behaviour."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, Sequence

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
    progress: Callable[[str, int], Callable[[int], None]]  # (description, total) -> advance(n); the runner prefixes the arm
    checked: dict | None = None  # what the arm's check() returned when the runner ran it (prepare then skips it)


class Strategy(Protocol):
    """Built by Hydra from `conf/strategies/NAME.yaml` (`_target_`) with `name=<arm name>` added, so messages and
    config errors can name the arm. Every member the harness reads is declared here; the ones with a body have a
    default that a strategy class gets by subclassing `Strategy` (every class in strategies/ does; the runner's
    plan refuses, in one line, a target that lacks one)."""

    uses_llm: ClassVar[bool] = True
    """False on an arm that uses no LLM (the embedding classifier): a run of only such arms loads no LLM."""

    def check(self, task: Task, lm: Any) -> dict:
        """Refuse, before any arm runs, what the task or the arm's model backend cannot do (ConfigError naming the
        arm and the capability), and resolve what depends on them (decode mode, answer length) onto the arm.
        Returns what it resolved; the runner runs it once per arm, keeps the result in its plan and hands it back
        as `PrepareContext.checked`, so prepare does not run it again."""
        return {}

    @property
    def arm_model(self) -> dict | None:
        """An LLM-free arm's model description for its results (`{"backend": "no LLM", ...}`); None: its LM's."""
        return None

    @property
    def tuned_lm(self) -> Any:
        """An arm that changes the model's weights: the LM it predicts with after prepare (the forgetting check
        scores it on a control set); None for the others."""
        return None

    def prepare(self, ctx: PrepareContext) -> dict:
        """Build what predictions need (demos, index, adapter); return a JSON-able report (prepare.json)."""
        ...

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        """Predict a batch of held-out examples (inputs only are used; targets are the harness's)."""
        ...

    def describe(self) -> dict:
        """Settings that define this arm (recorded, and fingerprinted for resume)."""
        ...


MEMBERS = ("uses_llm", "check", "arm_model", "tuned_lm", "prepare", "predict", "describe")


def missing_members(strategy: Any) -> list[str]:
    """The Strategy members an object (or class) lacks: the one place the protocol is checked structurally."""
    return [m for m in MEMBERS if not hasattr(strategy, m)]


def arm_model(strategy: Strategy, lm: Any) -> dict:
    """The model an arm's results name: its own `arm_model` when it uses no LLM, else its LM's description."""
    return strategy.arm_model or lm.describe()

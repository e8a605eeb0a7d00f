"""The runner: one task through the configured arms to a decision (recipe.py), built from a validated plan
(plan.py), one arm at a time (arm.py), with the checks around the arms (checks.py)."""

from harness.runner.arm import embedding_cosines, redact_record, score_strategy
from harness.runner.plan import fingerprint, load_configured_task, resolve_task_dir
from harness.runner.recipe import Runner

__all__ = ["Runner", "embedding_cosines", "fingerprint", "load_configured_task", "redact_record", "resolve_task_dir",
           "score_strategy"]

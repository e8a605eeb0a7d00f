"""Old path of `harness.lm.hf`, kept so a config naming `_target_: harness.lm_hf.TransformersLM` still builds."""

from harness.lm.hf import TransformersLM  # noqa: F401

"""Old path of `harness.lm.llamacpp`, kept so a config naming `_target_: harness.lm_llamacpp.LlamaCppLM` still builds."""

from harness.lm.llamacpp import LlamaCppLM  # noqa: F401

"""Old path of `harness.lm.http`, kept so a config naming `_target_: harness.lm_http.HTTPChatLM` still builds."""

from harness.lm.http import HTTPChatLM  # noqa: F401

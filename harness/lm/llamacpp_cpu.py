"""llama.cpp on CPUs with Intel AMX (Xeon Sapphire Rapids and later): its AMX weight buffers crash.

A llama-cpp-python built on such a CPU (the set-up builds it from source, for the CPU it runs on) repacks quantised
weights into AMX buffers, and the first decode of more than a token then dies in `ggml_backend_amx_mul_mat` with a
segmentation fault, taking the whole run with it (ggml-org/llama.cpp#20824; measured here 2026-12-07 on an Intel
Xeon with amx_int8: every prompt of 10 or more tokens). llama.cpp's model parameter `use_extra_bufts=false` (the
server's --no-repack) keeps the weights in plain CPU buffers, and then it runs. llama-cpp-python 0.3.36 does not
expose that parameter, so `plain_weight_buffers()` sets it in the default model parameters while a model is loaded.

`extra_buffers`: auto (off on a CPU with AMX, on elsewhere: other CPUs keep llama.cpp's faster repacked weights,
exactly as before), true, or false."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator

from harness.errors import ConfigError


def cpu_has_amx(cpuinfo: str | None = None) -> bool:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    return any(flag in cpuinfo.split() for flag in ("amx_int8", "amx_bf16", "amx_tile"))


def use_extra_buffers(setting, cpuinfo: str | None = None) -> bool:
    if setting in ("auto", None):
        return not cpu_has_amx(cpuinfo)
    if isinstance(setting, bool):
        return setting
    raise ConfigError(f"must be auto, true or false, got {setting!r}", field="model.extra_buffers")


@contextlib.contextmanager
def plain_weight_buffers(on: bool = True) -> Iterator[None]:
    """While open (and `on`), llama.cpp models load with use_extra_bufts=false."""
    if not on:
        yield
        return
    import llama_cpp.llama_cpp as api

    default = api.llama_model_default_params

    def without_extra_buffers():
        params = default()
        params.use_extra_bufts = False
        return params

    api.llama_model_default_params = without_extra_buffers
    try:
        yield
    finally:
        api.llama_model_default_params = default


def serve(argv: list[str]) -> None:
    """`python -m harness.lm.llamacpp_cpu [--plain-weight-buffers] <llama_cpp.server arguments>`: llama.cpp's
    OpenAI-compatible server, its model loaded with plain weight buffers when asked (harness.lm.server decides with
    `use_extra_buffers` and starts it this way)."""
    plain = argv[:1] == ["--plain-weight-buffers"]
    from llama_cpp.server.__main__ import main

    sys.argv = ["llama_cpp.server", *argv[plain:]]
    with plain_weight_buffers(plain):
        main()


if __name__ == "__main__":
    serve(sys.argv[1:])

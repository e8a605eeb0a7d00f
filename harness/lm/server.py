"""Start and stop llama-cpp-python's OpenAI-compatible server on a GGUF model, on 127.0.0.1 and a free port.

Used by the `server` tests and bench/backends.py; also handy by hand:
    python -m harness.lm.server [packaged:smollm2-135m-instruct|FILE.gguf] [--port 8000]   # Ctrl-C stops it
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from harness.lm.llamacpp import gguf_file
from harness.lm.llamacpp_cpu import use_extra_buffers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """`with LlamaServer(model) as server:` … `server.base_url` (…/v1). `stop()` and `start()` can be called again
    (the fault tests kill and restart it on the same port)."""

    def __init__(self, model: str, port: int | None = None, n_ctx: int = 8192, n_threads: int | None = None,
                 cache_dir: str | None = None, log: Path | None = None, extra_buffers="auto"):
        self.file = gguf_file(model, Path(cache_dir or os.environ.get("HARNESS_CACHE", "~/.cache/harness")).expanduser())
        self.port = port or free_port()
        self.n_ctx, self.n_threads, self.log = n_ctx, n_threads, log
        self.extra_buffers = use_extra_buffers(extra_buffers)  # decided here, where a bad setting is one line
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 120.0) -> "LlamaServer":
        # llama_cpp.server, started through llamacpp_cpu so that a CPU with AMX gets plain weight buffers
        plain = [] if self.extra_buffers else ["--plain-weight-buffers"]
        cmd = [sys.executable, "-m", "harness.lm.llamacpp_cpu", *plain, "--model", str(self.file), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", str(self.n_ctx)]
        if self.n_threads:
            cmd += ["--n_threads", str(self.n_threads)]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with code {self.proc.returncode} while starting"
                                   + (f" (log: {self.log})" if self.log else ""))
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"llama.cpp server did not answer within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it accepts connections but never answers, like a hung server."""
        if self.proc:
            self.proc.send_signal(__import__("signal").SIGSTOP)

    def resume(self) -> None:
        if self.proc:
            self.proc.send_signal(__import__("signal").SIGCONT)

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.resume()
        self.stop()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.lm.server",
                                     description="Serve a GGUF model with llama.cpp's OpenAI-compatible server.")
    parser.add_argument("model", nargs="?", default="packaged:smollm2-135m-instruct",
                        help="packaged:NAME or a .gguf path (default: the packaged SmolLM2-135M-Instruct)")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000, as "
                        "conf/model/llama_server.yaml expects)")
    parser.add_argument("--n_ctx", type=int, default=8192, help="context tokens (default 8192)")
    args = parser.parse_args()
    with LlamaServer(args.model, port=args.port, n_ctx=args.n_ctx) as server:
        print(f"serving {server.file.name} at {server.base_url} (Ctrl-C stops it)", flush=True)
        try:
            server.proc.wait()
        except KeyboardInterrupt:
            pass

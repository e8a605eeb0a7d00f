import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_layer_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    r = subprocess.run([str(lint), "--config", str(ROOT / ".importlinter")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    declared = (ROOT / ".importlinter").read_text().count("[importlinter:contract:")
    assert f"Contracts: {declared} kept, 0 broken" in r.stdout


def test_the_backends_old_target_paths_still_build():
    """Configs written before the lm/ package name `harness.lm_hf.TransformersLM` etc.; they must keep working."""
    from hydra.utils import get_class

    from harness.lm.hf import TransformersLM
    from harness.lm.http import HTTPChatLM
    from harness.lm.llamacpp import LlamaCppLM

    assert get_class("harness.lm_hf.TransformersLM") is TransformersLM
    assert get_class("harness.lm_http.HTTPChatLM") is HTTPChatLM
    assert get_class("harness.lm_llamacpp.LlamaCppLM") is LlamaCppLM

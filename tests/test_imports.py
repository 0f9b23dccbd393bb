"""The core package imports without NeMo, Megatron or Transformer Engine (and quickly)."""

import subprocess
import sys


def test_core_does_not_import_nemo_or_megatron():
    code = (
        "import sys, focus_nemo.evo2, focus_nemo.focus, focus_nemo.data, focus_nemo.evaluate, focus_nemo.train\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('nemo', 'megatron', 'transformer_engine', "
        "'lightning', 'pytorch_lightning')]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout

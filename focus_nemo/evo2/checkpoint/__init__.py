"""Reading and writing Evo-2 checkpoints.

Formats, recognised from the file contents and tensor names (never from file names):

* **ours**: a directory with ``model.safetensors`` and ``config.json`` (written by `save_evo2`), the bare
  ``.safetensors`` file (its metadata carries the config), or a torch file holding an `Evo2Model` state dict.
* **vortex**: the Arc inference checkpoint (``evo2_7b.pt``), possibly split into ``<name>.pt.part0..N``
  byte ranges that are concatenated in order.
* **savanna**: the Arc training checkpoint, ``torch.load(f)["module"]`` with ``sequential.{i}.`` keys.
* **NeMo2**: a directory with ``weights/`` and ``context/`` (read by `focus_nemo.evo2.nemo2`).

Every torch file is read with ``weights_only=True``: tensors and plain containers only, plus two inert
types found in real checkpoints (`io.BytesIO` for Transformer Engine FP8 metadata, `argparse.Namespace`
for training arguments). There is no fallback to unrestricted unpickling.

Layout facts the converters rely on (reference: the vortex inference engine and NeMo's Hyena layers):

* Hyena input projection rows are grouped per hidden channel d as (gate, pre, v) = (z[3d], z[3d+1], z[3d+2]);
  vortex calls them (x2, x1, v), NeMo (x1, x2, v); the output is gate * (h * (pre * v) + D * pre * v).
  All formats store the same row order, so the projections copy across unchanged.
* Featurizer and short (S) filter taps are stored in ``F.conv1d`` orientation (last tap = current sample)
  everywhere, which is ours. Vortex runs FIR filters of length >= 128 as an FFT convolution with the taps as
  the impulse response (first tap = current sample), which is our medium (D) filter convention: no flips.
* Attention Wqkv is stored in the Megatron per-head layout [heads, (q, k, v), head_dim] in vortex, savanna and
  NeMo; ours is [Q; K; V] (vortex permutes it the same way at load time with ``column_split``).

RMSNorm form (`Evo2Config.norm_form`, DESIGN D10): that of the code a checkpoint comes from. Vortex and savanna
files are Arc's ("arc": x / (rms + eps)) unless a config says otherwise (the YAML `export_vortex` writes records
the form of the model exported); NeMo 2 files are NeMo's ("nemo": x * rsqrt(mean square + eps)); our own files
record it in their config (files written before the field existed are "nemo", `LEGACY_NORM_FORM`). A ``config``
argument that leaves ``norm_form`` at its default (`Evo2Config.norm_form_chosen` is False) gets the file's form;
one that sets a form contradicting the file's is used as given, with a warning naming both.

Configs Arc's files do not record (rotary scaling, eps, activation scheme) come from the ``config`` argument: an
`Evo2Config`, a preset name, or Arc's YAML (``evo2/configs/evo2-7b-262k.yml``). Without one they are taken from
the published model whose shapes the file has; where that is ambiguous (the 8k and 262k 7B models share a shape)
or no published model matches, loading is refused with an error naming what is missing.

Modules, one per format: ``ours``, ``vortex``, ``savanna`` (NeMo 2 is `focus_nemo.evo2.nemo2`); ``reader``
recognises the format and converts (`read_checkpoint`, `load_evo2`); ``configs`` finds a file's config;
``common`` holds what they share. This package re-exports the public names.
"""

from focus_nemo.evo2.checkpoint.common import (
    CONFIG_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    CheckpointError,
    check_state_dict,
)
from focus_nemo.evo2.checkpoint.configs import infer_config
from focus_nemo.evo2.checkpoint.ours import save_evo2
from focus_nemo.evo2.checkpoint.reader import load_evo2, read_checkpoint
from focus_nemo.evo2.checkpoint.savanna import convert_savanna_state_dict
from focus_nemo.evo2.checkpoint.vortex import (
    convert_vortex_state_dict,
    export_vortex,
    vortex_state_dict,
    vortex_yaml_path,
)

__all__ = [
    "CONFIG_FILE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "CheckpointError",
    "check_state_dict",
    "convert_savanna_state_dict",
    "convert_vortex_state_dict",
    "export_vortex",
    "infer_config",
    "load_evo2",
    "read_checkpoint",
    "save_evo2",
    "vortex_state_dict",
    "vortex_yaml_path",
]

"""The former name of `focus_nemo.loading`, kept so that existing imports keep working."""

from focus_nemo.loading import (
    DTYPES,
    EMBEDDED_ADAPTER,
    embedded_adapter_dir,
    load_base_model,
    load_focus_model,
    parse_dtype,
    resolve_checkpoint,
)

__all__ = ["DTYPES", "EMBEDDED_ADAPTER", "embedded_adapter_dir", "load_base_model", "load_focus_model", "parse_dtype",
           "resolve_checkpoint"]

"""FOCUS core: Focus-token layout, masks, Focus attention, streaming memory, adapter files."""

from focus_nemo.focus.adapter import load_adapter, read_adapter_config, save_adapter
from focus_nemo.focus.config import FocusConfig
from focus_nemo.focus.layout import Layout, Tokens, visible
from focus_nemo.focus.loss import focus_loss, split_case, weighted_ce
from focus_nemo.focus.model import FocusCore, FocusModel, FocusState

__all__ = ["FocusConfig", "FocusCore", "FocusModel", "FocusState", "Layout", "Tokens", "focus_loss", "load_adapter",
           "read_adapter_config", "save_adapter", "split_case", "visible", "weighted_ce"]

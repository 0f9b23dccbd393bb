"""focus-nemo: FOCUS context compression for Evo-2 DNA language models."""

__version__ = "0.1.0"

"""`conftest.require_nemo` skips only where the nemo extra is not installed; an installed but
broken NeMo fails the test that needs it."""

from __future__ import annotations

import importlib.abc
import sys
from importlib import metadata

import pytest
from conftest import NEMO_DISTRIBUTIONS, require_nemo


class _BrokenNemoFinder(importlib.abc.MetaPathFinder):
    """Makes ``import nemo`` fail the way a broken Transformer Engine does (RuntimeError at import)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "nemo":
            raise RuntimeError("simulated broken install: libtransformer_engine.so: undefined symbol")
        return None


def _pretend_installed(monkeypatch) -> None:
    real = metadata.distribution

    def distribution(name):
        return object() if name in NEMO_DISTRIBUTIONS else real(name)

    monkeypatch.setattr(metadata, "distribution", distribution)


def _require_nemo_without_skip() -> None:
    """require_nemo, where a skip is a test failure (the behaviour under test is not to skip)."""
    try:
        require_nemo()
    except pytest.skip.Exception as skip:
        pytest.fail(f"require_nemo skipped an installed but broken NeMo: {skip}")


def _unload_nemo(monkeypatch) -> None:
    for name in [m for m in sys.modules if m == "nemo" or m.startswith("nemo.")]:
        monkeypatch.delitem(sys.modules, name)


def test_broken_nemo_install_fails_instead_of_skipping(monkeypatch):
    _pretend_installed(monkeypatch)
    _unload_nemo(monkeypatch)
    monkeypatch.setattr(sys, "meta_path", [_BrokenNemoFinder(), *sys.meta_path])
    with pytest.raises(RuntimeError, match="simulated broken install"):
        _require_nemo_without_skip()


def test_nemo_module_missing_despite_installed_distribution_fails(monkeypatch):
    _pretend_installed(monkeypatch)
    monkeypatch.setitem(sys.modules, "nemo", None)  # `import nemo` raises ImportError
    with pytest.raises(ImportError, match="nemo"):
        _require_nemo_without_skip()


def test_extra_not_installed_skips(monkeypatch):
    real = metadata.distribution

    def distribution(name):
        if name == "nemo_toolkit":
            raise metadata.PackageNotFoundError(name)
        return real(name) if name not in NEMO_DISTRIBUTIONS else object()

    monkeypatch.setattr(metadata, "distribution", distribution)
    with pytest.raises(pytest.skip.Exception, match="nemo_toolkit"):
        require_nemo()

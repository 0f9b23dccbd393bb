"""CUDA tests (pytest -m gpu tests/gpu). A package, so that its conftest.py does not replace tests/conftest.py."""

"""Fidelity evaluation, by concern: ``metrics`` (per-position distances, the held-out `fidelity`),
``statistics``, ``config``, ``sequences`` (sampling and one sequence), ``report``, ``plots`` and ``run``
(`evaluate`). `focus_nemo.evaluate` defines the methods and re-exports the public names."""

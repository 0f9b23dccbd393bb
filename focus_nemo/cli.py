"""The command-line layer the tools in ``recipes/`` share (argparse; the training, evaluation and
pretraining recipes are Hydra apps instead, configured from ``conf/``).

Every tool: a module docstring with a ``Usage:`` section that is its ``--help`` text (`parser`), the
options it shares with the others (`add_device_argument`, `set_threads`, `adapter_argument`; the scoring
tools' model options are `focus_nemo.scoring.add_model_arguments`), and `run`, which sets
up logging and ends a command whose input is unusable with one line, ``error: <message naming the file,
record or field>``, and exit status 1.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

INPUT_ERRORS = (ValueError, KeyError, OSError)  # bad input; the messages name the file, record or field


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring as written, and each option's default after its help."""


def parser(doc: str) -> argparse.ArgumentParser:
    """The parser of a tool whose module docstring is `doc` (shown whole by ``--help``)."""
    return argparse.ArgumentParser(description=doc, formatter_class=HelpFormatter)


def checked(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type`` that reports `parse`'s own ValueError message."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


def add_device_argument(p: argparse.ArgumentParser, help: str = "cpu, cuda or cuda:N (default: cuda when "
                        "available)") -> None:
    p.add_argument("--device", help=help)


def default_device(requested: str | None) -> str:
    """`requested`, else ``cuda`` when a CUDA device is visible, else ``cpu``."""
    import torch

    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(threads: int | None) -> None:
    """torch's CPU threads (None or 0: torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def adapter_argument(text: str) -> str | None:
    """``--adapter none`` -> None (untrained Focus projections); anything else as given."""
    return None if text.lower() == "none" else text


def run(command: Callable[[], T], errors: tuple[type[BaseException], ...] = INPUT_ERRORS, quiet: bool = False) -> T:
    """Run a tool's command, logging this package's INFO messages and other libraries' warnings; an input error
    ends it with ``error: <message>`` (status 1), or with status 1 alone when `quiet` (ranks other than 0 of
    a multi-process run, which log warnings only)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("focus_nemo").setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        return command()
    except errors as e:
        if quiet:
            raise SystemExit(1) from None
        raise SystemExit(f"error: {e}") from None

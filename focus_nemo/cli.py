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


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= `minimum` (the message names the value)."""

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise ValueError(f"must be >= {minimum}, got {value}")
        return value

    integer.__name__ = f"integer >= {minimum}"
    return checked(integer)


def number_above_zero(text: str) -> float:
    """A finite number > 0 (`positive_number` is the argparse ``type``)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"expected a number > 0, got {text!r}")
    return value


positive_number = checked(number_above_zero)


def check_device(text: str) -> str:
    """`text` when it names a device this machine has (``cpu``, ``cuda``, ``cuda:N``, ``mps``); otherwise a
    ValueError naming the value and why."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"{text!r} is not a device (cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{text!r}: no CUDA device is available here (torch {torch.__version__}, CUDA "
                             f"{torch.version.cuda or 'not built in'}); use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{text!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{text!r}: no MPS device is available here; use cpu")
    elif device.type != "cpu":
        raise ValueError(f"{text!r}: not a device these tools run on (cpu, cuda, cuda:N, mps)")
    return text


def add_device_argument(p: argparse.ArgumentParser, help: str = "cpu, cuda or cuda:N (default: cuda when "
                        "available)") -> None:
    p.add_argument("--device", type=checked(check_device), help=help)


def default_device(requested: str | None) -> str:
    """`requested` (checked: `check_device`), else ``cuda`` when a CUDA device is visible, else ``cpu``."""
    import torch

    if requested:
        try:
            return check_device(requested)
        except ValueError as e:
            raise ValueError(f"--device: {e}") from None
    return "cuda" if torch.cuda.is_available() else "cpu"


def set_threads(threads: int | None) -> None:
    """torch's CPU threads (None or 0: torch's default; a negative number is refused, naming it)."""
    if threads is not None and threads < 0:
        raise ValueError(f"--threads: must be >= 1 (or 0 for torch's default), got {threads}")
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

"""The errors and warnings of FASTA reading (`focus_nemo.data.fasta`); every message names the file."""

from __future__ import annotations


class FastaError(ValueError):
    """Base class of this module's errors; the message always names the file."""


class FastaFormatError(FastaError):
    """The file is not usable FASTA (bad bytes, no records, truncated compression, ...)."""


class RecordNotFoundError(FastaError, KeyError):
    """A requested record is not in the file; the message lists the records that are."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class FastaWarning(UserWarning):
    """A record was left out under a documented policy (the warning names it)."""

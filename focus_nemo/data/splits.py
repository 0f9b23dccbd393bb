"""Train / validation / test regions from a configuration.

A split is a list of entries, each one of:

* a record name, with the aliases of `focus_nemo.data.fasta.canonical_name` (``chr20`` finds ``20``):
  the whole record;
* a samtools-style region ``chrom:start-end`` (1-based, inclusive; commas allowed):
  ``chr20:30,000,001-32,000,000``;
* a `Region` (0-based, half open).

``train`` left out (or ``"all"``) means every record that no other split names. A record name that
contains ``:`` (e.g. HLA alleles in some GRCh38 analysis sets) is taken as a name when the genome has it.

When only one chromosome is available (the small CPU demo), ``val_fraction`` / ``test_fraction`` hold out
the tail of every training region: the training part keeps the head, validation the next
``val_fraction`` of bases, test the last ``test_fraction``. Training windows are drawn inside the
training part only, so no training window contains a held-out base.

Splits never overlap: two entries that share a base raise an error naming both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from focus_nemo.data.fasta import FastaFile, Genome
from focus_nemo.data.regions import Region, parse_region

SPLITS = ("train", "val", "test")

Entry = str | Region


@dataclass
class Splits:
    """Regions of each split (0-based, half open; record names as the FASTA spells them)."""

    train: list[Region] = field(default_factory=list)
    val: list[Region] = field(default_factory=list)
    test: list[Region] = field(default_factory=list)

    def __getitem__(self, name: str) -> list[Region]:
        if name not in SPLITS:
            raise KeyError(f"split {name!r} is not one of {SPLITS}")
        return getattr(self, name)

    def bases(self, name: str) -> int:
        """Total bases of split `name`."""
        return sum(len(r) for r in self[name])

    def describe(self) -> str:
        """One line per split: its regions and total bases."""
        return "\n".join(f"{s}: {', '.join(map(str, self[s])) or '-'} ({self.bases(s):,} bases)" for s in SPLITS)


def _regions(genome: Genome | FastaFile, entries: Iterable[Entry], what: str) -> list[Region]:
    out = []
    for e in entries:
        item = parse_region(e, genome) if isinstance(e, str) else e
        if isinstance(item, str):
            out += [Region(name, 0, genome.length(name)) for name in genome.records([item])]
            continue
        chrom = genome.resolve(item.chrom)
        n = genome.length(chrom)
        if item.end > n:
            raise ValueError(f"splits.{what}: region {item} ends beyond record {chrom!r} (length {n:,})")
        out.append(Region(chrom, item.start, item.end))
    return out


def tail_holdout(region: Region, val_fraction: float, test_fraction: float = 0.0) -> tuple[Region, Region, Region]:
    """Split one region into (train head, val, test tail) by fractions of its length (floors)."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"tail_holdout: need fractions >= 0 with val + test < 1, got {val_fraction}, {test_fraction}")
    n = len(region)
    n_val, n_test = int(n * val_fraction), int(n * test_fraction)
    for frac, size, name in ((val_fraction, n_val, "val"), (test_fraction, n_test, "test")):
        if frac > 0 and size == 0:
            raise ValueError(f"tail_holdout: {name}_fraction {frac} of {region} ({n} bases) is less than one base")
    a = region.end - n_val - n_test
    b = a + n_val
    return Region(region.chrom, region.start, a), Region(region.chrom, a, b), Region(region.chrom, b, region.end)


def make_splits(genome: Genome | FastaFile, train: Sequence[Entry] | str | None = None, val: Sequence[Entry] = (),
                test: Sequence[Entry] = (), val_fraction: float = 0.0, test_fraction: float = 0.0) -> Splits:
    """Resolve split entries against `genome` (see the module docstring).

    Raises:
        RecordNotFoundError: an entry names no record (the message lists the records).
        ValueError: splits overlap, a region lies outside its record, or a fraction is out of range.
    """
    val_r = _regions(genome, [val] if isinstance(val, str) else val, "val")
    test_r = _regions(genome, [test] if isinstance(test, str) else test, "test")
    if train is None or train == "all" or train == ["all"]:
        named = {r.chrom for r in val_r + test_r}
        train_r = [Region(n, 0, genome.length(n)) for n in genome.records() if n not in named]
    else:
        train_r = _regions(genome, [train] if isinstance(train, str) else train, "train")
    if val_fraction or test_fraction:
        parts = [tail_holdout(r, val_fraction, test_fraction) for r in train_r]
        train_r = [p[0] for p in parts]
        val_r += [p[1] for p in parts if len(p[1])]
        test_r += [p[2] for p in parts if len(p[2])]
    splits = Splits(train_r, val_r, test_r)
    _check_disjoint(splits)
    if not splits.train:
        raise ValueError(f"splits: the training split is empty ({genome})")
    return splits


def splits_from_config(genome: Genome | FastaFile, cfg: Mapping) -> Splits:
    """`make_splits` from a mapping (e.g. a Hydra node) with keys ``train``, ``val``, ``test``,
    ``val_fraction``, ``test_fraction`` (all optional)."""
    unknown = set(cfg) - {"train", "val", "test", "val_fraction", "test_fraction"}
    if unknown:
        raise ValueError(f"splits config: unknown key(s) {sorted(unknown)}; "
                         "expected train, val, test, val_fraction, test_fraction")

    def entries(key: str) -> list | str | None:
        v = cfg.get(key)
        return v if v is None or isinstance(v, str) else list(v)

    return make_splits(genome, train=entries("train"), val=entries("val") or (), test=entries("test") or (),
                       val_fraction=float(cfg.get("val_fraction") or 0.0),
                       test_fraction=float(cfg.get("test_fraction") or 0.0))


def _check_disjoint(splits: Splits) -> None:
    tagged = [(r, s) for s in SPLITS for r in splits[s]]
    for i, (a, sa) in enumerate(tagged):
        for b, sb in tagged[i + 1:]:
            if a.chrom == b.chrom and a.start < b.end and b.start < a.end:
                raise ValueError(f"splits overlap: {sa} region {a} and {sb} region {b} share bases")

"""Windows of real DNA for training and evaluation, and the batches the loss consumes.

Training windows (`WindowSampler`, `TrainWindowDataset`): each window is drawn uniformly over all valid
starts of all regions together, so a region's share is proportional to its number of starts
(``length - L + 1``), i.e. to its length. With probability ``rc_prob`` the window is read from the minus
strand (IUPAC-aware, case-preserving reverse complement). Window ``i`` is a pure function of
``(seed, i)``: it draws from its own generator, ``PCG64(SeedSequence(seed, spawn_key=(i,)))``. The sampler's
complete RNG state is therefore the seed plus the step count, which is what ``state_dict()`` stores; a
resumed sampler (or DataLoader worker, or rank) reproduces the remaining windows bit for bit without
replaying the ones before.

Evaluation windows (`TileDataset`): a deterministic tiling of each region from its start, fixed stride
(default: the window length, i.e. non-overlapping), plus strand only. The tail shorter than a window
is not scored; its size is reported.

Policies:

* N runs: a window with more than ``max_n_fraction`` of its bases ``N``/``n`` is skipped. The sampler
  draws again (counted in `SamplerStats` and in ``Batch.n_skipped``); the tiler drops the tile (counted in
  ``TileDataset.stats``, logged). If ``max_draws`` draws in a row are all skipped, the sampler raises a
  `ValueError` naming the regions instead of looping forever (a region set that is all N).
* Regions shorter than the window: ``short_region="skip"`` leaves them out with a warning naming them;
  ``"error"`` raises. No usable region at all is always an error.

Batch layout (next-base prediction; `Batch`):

* ``raw`` [B, L]: byte ids as read (case kept, minus strand already reverse-complemented);
* ``tokens`` [B, L]: ``raw`` upper-cased: the model input;
* ``targets`` [B, L-1] = ``tokens[:, 1:]`` and ``loss_weight`` [B, L-1]: the logits of input positions
  ``0..L-2`` (``model(tokens[:, :-1])`` or ``model(tokens)[:, :-1]``) predict ``targets``. The weight of a
  target is 1 for ``A C G T``, ``lowercase_weight`` for soft-masked ``a c g t`` and 0 for anything else
  (``N``, IUPAC codes, either case), which matches `focus_nemo.focus.loss.split_case` on ``raw``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from focus_nemo.data.fasta import FastaFile, FastaWarning, Genome
from focus_nemo.data.regions import Region, parse_region

logger = logging.getLogger(__name__)

_COMPLEMENT = np.arange(256, dtype=np.uint8)
for _a, _b in zip(b"ACGTRYKMSWBDHVN", b"TGCAYRMKSWVHDBN", strict=True):
    _COMPLEMENT[_a] = _b
    _COMPLEMENT[_a + 32] = _b + 32  # lower case complements to lower case
_UPPER = np.arange(256, dtype=np.uint8)
_UPPER[ord("a"): ord("z") + 1] -= 32
_CLASS = np.zeros(256, dtype=np.uint8)  # 0: no loss, 1: A/C/G/T, 2: soft-masked a/c/g/t
_CLASS[list(b"ACGT")] = 1
_CLASS[list(b"acgt")] = 2

STRANDS = ("+", "-")


def reverse_complement(seq: np.ndarray | bytes) -> np.ndarray | bytes:
    """Reverse complement with IUPAC codes (R<->Y, K<->M, B<->V, D<->H; S, W, N self) and case preserved.

    Returns the same type as given (a new ``np.uint8`` array for arrays).
    """
    if isinstance(seq, (bytes, bytearray)):
        return _COMPLEMENT[np.frombuffer(seq, dtype=np.uint8)][::-1].tobytes()
    return _COMPLEMENT[np.asarray(seq, dtype=np.uint8)][::-1].copy()


def upper(seq: np.ndarray) -> np.ndarray:
    """ASCII upper case of a ``uint8`` array (the model input)."""
    return _UPPER[seq]


def loss_weights(raw: np.ndarray, lowercase_weight: float = 0.1) -> np.ndarray:
    """Per-base target weight (``float32``, same shape): 1 for ACGT, `lowercase_weight` for acgt, else 0."""
    return np.array([0.0, 1.0, lowercase_weight], dtype=np.float32)[_CLASS[raw]]


@dataclass
class Window:
    """One window: where it came from and its bases as read (case kept, oriented to `strand`)."""

    chrom: str
    start: int  # 0-based, on the plus strand, for either strand
    end: int
    strand: str  # "+" or "-"
    seq: np.ndarray  # uint8 [end - start]
    index: int = -1  # sample index in the sampler's stream (-1 for tiles)
    n_skipped: int = 0  # windows drawn and skipped for N before this one


@dataclass
class Batch:
    """A batch of windows, ready for next-base prediction (layout in the module docstring).

    Attributes:
        raw: LongTensor [B, L], byte ids as read (case kept).
        tokens: LongTensor [B, L], upper-cased ``raw``: the model input.
        targets: LongTensor [B, L-1], ``tokens[:, 1:]``.
        loss_weight: FloatTensor [B, L-1], weight of each target.
        chrom: record name per row.
        start: LongTensor [B], 0-based plus-strand start per row.
        strand: ``"+"``/``"-"`` per row.
        index: LongTensor [B], sample index per row (-1 for evaluation tiles).
        step: batch number in the dataset's stream (-1 when built by hand); resume from ``step + 1``.
        n_skipped: windows skipped for too many N while drawing this batch.
    """

    raw: torch.Tensor
    tokens: torch.Tensor
    targets: torch.Tensor
    loss_weight: torch.Tensor
    chrom: list[str]
    start: torch.Tensor
    strand: list[str]
    index: torch.Tensor
    step: int = -1
    n_skipped: int = 0

    _TENSORS = ("raw", "tokens", "targets", "loss_weight", "start", "index")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Copy of the batch with its tensors on `device`."""
        moved = {k: getattr(self, k).to(device, non_blocking=non_blocking) for k in self._TENSORS}
        return Batch(**moved, chrom=self.chrom, strand=self.strand, step=self.step, n_skipped=self.n_skipped)

    def pin_memory(self) -> Batch:
        """Pinned copy (called by ``DataLoader(pin_memory=True)``)."""
        pinned = {k: getattr(self, k).pin_memory() for k in self._TENSORS}
        return Batch(**pinned, chrom=self.chrom, strand=self.strand, step=self.step, n_skipped=self.n_skipped)


def make_batch(windows: Sequence[Window], lowercase_weight: float = 0.1, step: int = -1) -> Batch:
    """Stack windows of equal length into a `Batch`."""
    if not windows:
        raise ValueError("make_batch: no windows")
    lengths = {len(w.seq) for w in windows}
    if len(lengths) != 1:
        raise ValueError(f"make_batch: windows have different lengths {sorted(lengths)}")
    if lengths.pop() < 2:
        raise ValueError("make_batch: windows need at least 2 bases (one input, one target)")
    raw = np.stack([w.seq for w in windows])
    tokens = torch.from_numpy(upper(raw).astype(np.int64))
    return Batch(
        raw=torch.from_numpy(raw.astype(np.int64)),
        tokens=tokens,
        targets=tokens[:, 1:].clone(),
        loss_weight=torch.from_numpy(loss_weights(raw[:, 1:], lowercase_weight)),
        chrom=[w.chrom for w in windows],
        start=torch.tensor([w.start for w in windows], dtype=torch.int64),
        strand=[w.strand for w in windows],
        index=torch.tensor([w.index for w in windows], dtype=torch.int64),
        step=step,
        n_skipped=sum(w.n_skipped for w in windows),
    )


def _n_count(seq: np.ndarray) -> int:
    return int(np.count_nonzero((seq == ord("N")) | (seq == ord("n"))))


def _as_genome(source: Genome | FastaFile) -> Genome | FastaFile:
    if not hasattr(source, "fetch") or not hasattr(source, "records"):
        raise TypeError(f"expected a Genome or FastaFile, got {type(source).__name__}")
    return source


def _usable_regions(genome: Genome | FastaFile, regions: Sequence[Region | str], window: int,
                    short_region: str, what: str) -> list[Region]:
    """Resolve names, check bounds, apply the empty- and short-region policies."""
    if window < 2:
        raise ValueError(f"{what}: window must be >= 2 bases, got {window}")
    if short_region not in ("skip", "error"):
        raise ValueError(f"{what}: short_region {short_region!r} is not 'skip' or 'error'")
    out: list[Region] = []
    for entry in regions:
        r = parse_region(entry, genome) if isinstance(entry, str) else entry
        if isinstance(r, str):
            out += [Region(name, 0, genome.length(name)) for name in genome.records([r])]
            continue
        chrom = genome.resolve(r.chrom)
        n = genome.length(chrom)
        if r.end > n:
            raise ValueError(f"{what}: region {r} ends beyond record {chrom!r} (length {n}) in {genome}")
        out.append(Region(chrom, r.start, r.end))
    short = [r for r in out if len(r) < window]
    if short:
        msg = f"{what}: region(s) shorter than the window of {window} bases: {', '.join(map(str, short))} ({genome})"
        if short_region == "error":
            raise ValueError(msg)
        warnings.warn(msg + " (skipped: short_region='skip')", FastaWarning, stacklevel=3)
    out = [r for r in out if len(r) >= window]
    if not out:
        raise ValueError(f"{what}: no region holds a full window of {window} bases ({genome})")
    return out


@dataclass
class SamplerStats:
    """What a sampler has done in this process (windows yielded and skipped for N, per record)."""

    yielded: int = 0
    skipped_n: int = 0
    skipped_by_chrom: dict[str, int] = field(default_factory=dict)

    def report(self) -> str:
        drawn = self.yielded + self.skipped_n
        frac = self.skipped_n / drawn if drawn else 0.0
        return f"{self.yielded} windows yielded, {self.skipped_n} of {drawn} drawn skipped for N ({frac:.1%})"


class WindowSampler:
    """Seeded random windows of `window` bases over `regions`, uniform over valid starts.

    Args:
        genome: a `Genome` or `FastaFile`.
        regions: `Region`s, record names (whole records; aliases accepted) or ``"chrom:start-end"`` texts
            (1-based, inclusive).
        window: window length L in bases.
        seed: stream seed.
        rc_prob: probability of reading a window from the minus strand.
        max_n_fraction: windows with more than this fraction of N bases are skipped (and counted).
        short_region: ``"skip"`` (warn) or ``"error"`` for regions shorter than `window`.
        max_draws: consecutive skipped draws after which the sampler gives up with an error.

    Iterating yields `Window`s from ``step`` on; ``sample(i)`` gives window ``i`` directly.
    """

    def __init__(self, genome: Genome | FastaFile, regions: Sequence[Region | str], window: int, *, seed: int = 0,
                 rc_prob: float = 0.0, max_n_fraction: float = 0.1, short_region: str = "skip",
                 max_draws: int = 1000) -> None:
        if not 0.0 <= rc_prob <= 1.0:
            raise ValueError(f"WindowSampler: rc_prob must be in [0, 1], got {rc_prob}")
        if not 0.0 <= max_n_fraction <= 1.0:
            raise ValueError(f"WindowSampler: max_n_fraction must be in [0, 1], got {max_n_fraction}")
        self.genome = _as_genome(genome)
        self.window = int(window)
        self.regions = _usable_regions(self.genome, regions, self.window, short_region, "WindowSampler")
        self.seed = int(seed)
        self.rc_prob = float(rc_prob)
        self.max_n_fraction = float(max_n_fraction)
        self.max_draws = int(max_draws)
        starts = np.array([len(r) - self.window + 1 for r in self.regions], dtype=np.int64)
        self._cum = np.cumsum(starts)
        self.n_starts = int(self._cum[-1])
        self.step = 0
        self.stats = SamplerStats()

    def config(self) -> dict:
        """What determines the stream besides the seed (checked on `load_state_dict`)."""
        return {
            "window": self.window,
            "regions": [str(r) for r in self.regions],
            "rc_prob": self.rc_prob,
            "max_n_fraction": self.max_n_fraction,
        }

    def sample(self, index: int) -> Window:
        """Window number `index` of the stream (pure: same seed and index, same window)."""
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(int(index),))))
        limit = math.floor(self.max_n_fraction * self.window + 1e-9)
        for skipped in range(self.max_draws):
            u = int(rng.integers(self.n_starts))
            minus = bool(rng.random() < self.rc_prob)
            r = int(np.searchsorted(self._cum, u, side="right"))
            region = self.regions[r]
            start = region.start + u - (int(self._cum[r - 1]) if r else 0)
            seq = self.genome.fetch(region.chrom, start, start + self.window)
            if _n_count(seq) > limit:
                self.stats.skipped_n += 1
                self.stats.skipped_by_chrom[region.chrom] = self.stats.skipped_by_chrom.get(region.chrom, 0) + 1
                if self.stats.skipped_n == 1:
                    logger.info("skipping windows with more than %.0f%% N; counts in SamplerStats / Batch.n_skipped",
                                100 * self.max_n_fraction)
                continue
            self.stats.yielded += 1
            if minus:
                seq = reverse_complement(seq)
            return Window(region.chrom, start, start + self.window, STRANDS[minus], seq, int(index), skipped)
        raise ValueError(
            f"WindowSampler: {self.max_draws} windows in a row had more than {self.max_n_fraction:.0%} N in "
            f"regions {', '.join(map(str, self.regions))} of {self.genome}; these regions are (almost) all N"
        )

    def __iter__(self) -> Iterator[Window]:
        return self

    def __next__(self) -> Window:
        w = self.sample(self.step)
        self.step += 1
        return w

    def state_dict(self) -> dict:
        """Exact stream position: seed, step count and the configuration that fixes the stream."""
        return {"seed": self.seed, "step": self.step, "config": self.config(),
                "stats": {"yielded": self.stats.yielded, "skipped_n": self.stats.skipped_n,
                          "skipped_by_chrom": dict(self.stats.skipped_by_chrom)}}

    def load_state_dict(self, state: dict) -> None:
        """Resume at ``state["step"]``; refuses a state saved under a different seed or configuration."""
        _check_config("WindowSampler", self.config(), state.get("config", {}))
        if "seed" in state and int(state["seed"]) != self.seed:
            raise ValueError(f"WindowSampler.load_state_dict: saved seed {state['seed']}, sampler seed {self.seed}")
        self.step = int(state["step"])
        s = state.get("stats", {})
        self.stats = SamplerStats(int(s.get("yielded", 0)), int(s.get("skipped_n", 0)),
                                  dict(s.get("skipped_by_chrom", {})))


def _check_config(what: str, mine: dict, saved: dict) -> None:
    diff = [k for k in mine if k in saved and saved[k] != mine[k]]
    if diff:
        detail = "; ".join(f"{k}: saved {saved[k]!r}, now {mine[k]!r}" for k in diff)
        raise ValueError(f"{what}.load_state_dict: the saved stream was made with a different configuration "
                         f"({detail})")


class TrainWindowDataset(IterableDataset):
    """Endless (or `num_steps`-long) stream of training `Batch`es from a `WindowSampler`.

    Batch ``s`` of rank ``r`` holds sample indices ``((s * world_size + r) * batch_size + j)``, so ranks see
    disjoint windows and the stream does not depend on the number of DataLoader workers: worker ``w`` of
    ``n`` makes the batches with ``s % n == w`` and the DataLoader returns them in order.

    Resuming: with ``num_workers=0`` the dataset tracks its own position (``state_dict()``); with worker
    processes, record ``batch.step + 1`` of the last batch used and pass ``{"step": that}`` to
    `load_state_dict` before making the next DataLoader iterator. Use ``DataLoader(ds, batch_size=None)``.

    Args:
        sampler: the window stream (its seed and configuration fix the data).
        batch_size: windows per batch (per rank).
        lowercase_weight: loss weight of soft-masked targets.
        rank: this process's data-parallel rank.
        world_size: number of data-parallel ranks.
        num_steps: stop after this many batches (``None``: never).
    """

    def __init__(self, sampler: WindowSampler, batch_size: int, lowercase_weight: float = 0.1, rank: int = 0,
                 world_size: int = 1, num_steps: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"TrainWindowDataset: batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"TrainWindowDataset: need 0 <= rank < world_size, got rank {rank}, world {world_size}")
        if lowercase_weight < 0:
            raise ValueError(f"TrainWindowDataset: lowercase_weight must be >= 0, got {lowercase_weight}")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.lowercase_weight = float(lowercase_weight)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.num_steps = num_steps
        self.step = 0

    def batch(self, step: int) -> Batch:
        """Batch number `step` of this rank (pure)."""
        first = (step * self.world_size + self.rank) * self.batch_size
        windows = [self.sampler.sample(first + j) for j in range(self.batch_size)]
        return make_batch(windows, self.lowercase_weight, step=step)

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        step = self.step
        while self.num_steps is None or step < self.num_steps:
            if step % nw == wid:
                b = self.batch(step)
                if info is None:
                    self.step = step + 1  # the caller holds batch `step`: resume after it
                yield b
            step += 1

    def config(self) -> dict:
        return {"batch_size": self.batch_size, "rank": self.rank, "world_size": self.world_size,
                "lowercase_weight": self.lowercase_weight, "sampler": self.sampler.config()}

    def state_dict(self) -> dict:
        """Position (next batch number) and the configuration that fixes the stream."""
        return {"step": self.step, "seed": self.sampler.seed, "config": self.config()}

    def load_state_dict(self, state: dict) -> None:
        """Resume at ``state["step"]``; a full state must come from the same configuration and seed."""
        _check_config("TrainWindowDataset", self.config(), state.get("config", {}))
        if "seed" in state and int(state["seed"]) != self.sampler.seed:
            raise ValueError(f"TrainWindowDataset.load_state_dict: saved seed {state['seed']}, "
                             f"sampler seed {self.sampler.seed}")
        self.step = int(state["step"])


class TileDataset(Dataset):
    """Deterministic evaluation tiles: windows at ``region.start + i * stride`` (plus strand).

    Tiles with more than `max_n_fraction` N are dropped and counted; the tail of a region that does not fill
    a window is not covered and its size is counted. ``stats`` holds the counts and the constructor logs them.

    Args:
        genome: a `Genome` or `FastaFile`.
        regions: `Region`s, record names or ``"chrom:start-end"`` texts (1-based, inclusive).
        window: tile length.
        stride: distance between tile starts, >= `window` (default `window`: adjacent, non-overlapping).
        max_n_fraction: tiles with more than this fraction of N are dropped.
        short_region: ``"skip"`` (warn) or ``"error"`` for regions shorter than `window`.
        lowercase_weight: used by `collate`.
    """

    def __init__(self, genome: Genome | FastaFile, regions: Sequence[Region | str], window: int,
                 stride: int | None = None, max_n_fraction: float = 0.1, short_region: str = "skip",
                 lowercase_weight: float = 0.1) -> None:
        self.genome = _as_genome(genome)
        self.window = int(window)
        self.stride = self.window if stride is None else int(stride)
        if self.stride < self.window:
            raise ValueError(f"TileDataset: stride {self.stride} < window {self.window} would overlap tiles")
        self.regions = _usable_regions(self.genome, regions, self.window, short_region, "TileDataset")
        self.lowercase_weight = float(lowercase_weight)
        limit = math.floor(max_n_fraction * self.window + 1e-9)
        self.tiles: list[tuple[str, int]] = []
        total = skipped = tail = 0
        chunk_tiles = max(1, (1 << 24) // self.stride)  # read ~16 Mb at a time
        for r in self.regions:
            n_tiles = (len(r) - self.window) // self.stride + 1
            tail += len(r) - ((n_tiles - 1) * self.stride + self.window)
            for c0 in range(0, n_tiles, chunk_tiles):
                c1 = min(n_tiles, c0 + chunk_tiles)
                s0 = r.start + c0 * self.stride
                seq = self.genome.fetch(r.chrom, s0, r.start + (c1 - 1) * self.stride + self.window)
                for t in range(c1 - c0):
                    o = t * self.stride
                    total += 1
                    if _n_count(seq[o: o + self.window]) > limit:
                        skipped += 1
                    else:
                        self.tiles.append((r.chrom, s0 + o))
        self.stats = {"tiles": total, "kept": len(self.tiles), "skipped_n": skipped, "tail_bases_not_covered": tail}
        logger.info("TileDataset: %d of %d tiles of %d bases kept, %d skipped (more than %.0f%% N), %d tail bases "
                    "not covered", len(self.tiles), total, self.window, skipped, 100 * max_n_fraction, tail)
        if not self.tiles:
            raise ValueError(f"TileDataset: every tile of {', '.join(map(str, self.regions))} has more than "
                             f"{max_n_fraction:.0%} N ({self.genome})")

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, i: int) -> Window:
        chrom, start = self.tiles[i]
        return Window(chrom, start, start + self.window, "+", self.genome.fetch(chrom, start, start + self.window))

    def collate(self, windows: Sequence[Window]) -> Batch:
        """``collate_fn`` for a DataLoader over this dataset."""
        return make_batch(windows, self.lowercase_weight)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """All tiles in order, `batch_size` at a time (the last batch may be smaller)."""
        for i in range(0, len(self), batch_size):
            yield make_batch([self[j] for j in range(i, min(len(self), i + batch_size))], self.lowercase_weight,
                             step=i // batch_size)

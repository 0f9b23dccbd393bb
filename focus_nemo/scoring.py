"""Per-base log-likelihood of whole FASTA records, and variant effect scores, streamed through FOCUS.

Score of a base: ``log p(base_t | bases < t)`` in natural log (nats), from the model's softmax over its
whole 512-byte vocabulary (the Evo-2 scoring convention). The model reads the upper-cased sequence, so
soft-masked (lower-case) bases are scored like the others and only counted apart. A position gets NaN
when its base is not A/C/G/T (``N`` or an IUPAC code: the model reads it but there is nothing to score)
and at the first base of a sequence, which has no prediction. NaN positions are counted, never dropped.

`score_fasta` streams each record from the file (``read_size`` bases at a time) through
`FocusModel.forward_chunk`: memory is the FOCUS streaming state (constant Hyena state plus N/k Focus
entries per attention block) plus one read of sequence and its scores; scores go to disk read by read
and no logits outlive their chunk. Output directory:

* ``<record>.npz``: ``log_likelihood`` (float32, one value per base, NaN as above) and ``meta`` (a JSON
  string: record, length, units, k, W, counts). ``<record>`` is the record name with characters outside
  ``A-Z a-z 0-9 . _ -`` replaced by ``_``.
* ``<record>.bedgraph.gz``: ``record  start  end  value`` per scored base, 0-based half-open, value in
  nats with 9 significant digits (exact for float32). Unscored positions have no line (bedGraph's way
  of saying "no data"); their counts are in ``summary.tsv``.
* ``summary.tsv``: one row per finished record (columns in `SUMMARY_COLUMNS`). ``not_scored`` =
  ``n_bases + iupac_bases + 1`` when the first base is A/C/G/T, else ``n_bases + iupac_bases``. ``status``
  is ``scored``; ``nothing_scored`` for a record streamed without a single scored base (only N/IUPAC, or
  one base), with the reason in ``note``; ``skipped`` for an empty record (a header with no sequence),
  which gets a row but no output files.
* A run that ends with no scored base in the directory at all is an error (after ``summary.tsv`` is
  written), unless ``allow_empty=True`` (``--allow-empty``) asks for it.
* ``manifest.json``: the scoring settings and, per finished record, its output files with SHA-256,
  its length and the SHA-256 of its sequence.

Every output file is written under a temporary name (``.<name>.<random>.tmp``) and renamed when
complete; the manifest is rewritten (atomically) only after a record's files are in place. A killed
run therefore leaves at worst temporary files, which ``resume=True`` deletes, and records missing from
the manifest, which it scores again. Resuming checks the settings (model and adapter weight
fingerprints, k, W, scope, dtype, formats): a difference is an error, never a mix of two settings in
one directory. Chunk size and device are recorded but not compared (they change no score beyond float
rounding).

Tensor parallel: with `torch.distributed` initialised and a model whose every rank holds a shard
(`focus_nemo.nemo.focus_model.NemoFocusModel`, loaded by `focus_nemo.nemo.scoring`), every rank calls
`score_fasta` with the same arguments and streams the same records; rank 0 alone touches the output
directory (lock, manifest, resume decisions, output files, progress bar) and broadcasts which records
to score, so every rank makes the same model calls. The weight fingerprints are taken over full
tensors (the checkpoint's Evo-2 state dict and the gathered adapter), so the settings of a
tensor-parallel run equal those of a single-device run of the same weights and either may resume the
other's directory; the tensor-parallel size is recorded with the device, not compared. An error on
rank 0 while preparing the directory is raised on every rank; a failure during scoring ends that
rank's process, and ``torchrun`` then stops the others.

`score_variants` scores REF -> ALT changes: ``delta_ll = ll_alt - ll_ref``, where ``ll_ref`` is the sum of
the scores of every scored position of the reference window ``[start - flank, end + flank)`` (clipped at
the record's ends; ``end = start + len(REF)``) and ``ll_alt`` the same sum over the window with REF
replaced by ALT. Both windows are read from their first base as a fresh sequence; the first base has no
prediction and non-ACGT bases are not scored (the same flank positions in both windows). For an indel
the alt window is ``len(ALT) - len(REF)`` bases longer; its right flank holds the same bases as the
reference's, shifted, and ``delta_ll`` includes the scores of the inserted bases (or lacks those of the
deleted ones), so it scales with the indel's length (about -1.4 nats per inserted base, +1.4 per deleted
one, whatever the sequence). Two length-fair columns go with it:

* ``delta_ll_flank``: the change in log-likelihood of the shared right flank (the ``scored_flank`` scored
  positions of ``[end, end + flank)``, the same bases in both windows) given the changed prefix: the
  variant's effect on how well the model predicts what follows it. The left flank and the alleles'
  common prefix are identical in both windows, so this is ``delta_ll`` minus the scores of the differing
  allele bases themselves. Empty (NaN) when the right flank has no scored base (REF at a record's end).
* ``delta_mean_ll``: ``ll_alt / scored_alt - ll_ref / scored_ref``, the change in the mean score per
  scored base of the window.

Which to use: for SNVs and other same-length changes (MNVs) ``delta_ll`` (both windows have the same
positions; it includes the changed bases' own probability and their effect on the flank). To rank indels,
and to compare indels with SNVs, use ``delta_ll_flank``: it compares the same bases in the same order and
does not grow with the indel's length; ``delta_mean_ll`` is a per-base summary of the whole window that
still mixes in the composition of the inserted or deleted bases. The left flank and the common prefix of REF and ALT
are streamed once; the streaming state is then copied and the two remaining suffixes are streamed from
it (identical to scoring both windows independently, since the state after the shared prefix is the
same). The window's first base sits at model position 0, as in `score_fasta` at a record's start.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import gzip
import hashlib
import io
import json
import logging
import math
import os
import re
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from focus_nemo.durable import durable_write_bytes, fsync_dir, publish, seal, sha256_file, staged
from focus_nemo.focus.config import check_k_window

logger = logging.getLogger(__name__)

UNITS = "nat"
SCORE_DEFINITION = ("log p(base_t | bases < t), natural log, softmax over the full byte vocabulary; "
                    "inputs upper-cased; NaN where base_t is not A/C/G/T and at t = 0")
MANIFEST = "manifest.json"
SUMMARY = "summary.tsv"
MANIFEST_FORMAT = "focus-nemo-scores/1"
FORMATS = ("npz", "bedgraph")
SUFFIX = {"npz": ".npz", "bedgraph": ".bedgraph.gz"}
SUMMARY_COLUMNS = ("record", "length", "scored", "not_scored", "n_bases", "iupac_bases", "soft_masked",
                   "soft_masked_scored", "sum_ll_nats", "mean_ll_nats", "bits_per_base", "perplexity",
                   "seconds", "bases_per_s", "status", "note")
VARIANT_COLUMNS = ("window_start", "window_end", "ll_ref", "ll_alt", "delta_ll", "delta_ll_flank", "delta_mean_ll",
                   "scored_ref", "scored_alt", "scored_flank", "status", "note")
DEFAULT_CHUNK = 8192
DEFAULT_READ = 1 << 20
_LOCK = ".score_fasta.lock"
_TMP = re.compile(r"^\..+\.tmp$")

_UPPER = np.arange(256, dtype=np.uint8)
_UPPER[ord("a"): ord("z") + 1] -= 32
_IS_ACGT = np.zeros(256, dtype=bool)
_IS_ACGT[list(b"ACGT")] = True
_IS_N = np.zeros(256, dtype=bool)
_IS_N[list(b"Nn")] = True
_IS_LOWER = np.zeros(256, dtype=bool)
_IS_LOWER[ord("a"): ord("z") + 1] = True


class ScoringError(ValueError):
    """Bad input or an output directory that cannot be used; the message names the file/record/row."""


# ---------------------------------------------------------------------------------------------- model
def tensor_fingerprint(named: Iterable[tuple[str, torch.Tensor]], samples: int = 65536) -> str:
    """SHA-256 over every tensor's name, shape, dtype and `samples` evenly spaced values (all values of
    smaller tensors): tells checkpoints apart without reading gigabytes twice."""
    h = hashlib.sha256()
    for name, t in named:
        t = t.detach()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}\n".encode())
        flat = t.reshape(-1)
        n = flat.numel()
        if n > samples:
            idx = torch.arange(samples, dtype=torch.int64, device=flat.device) * (n - 1) // (samples - 1)
            flat = flat[idx]
        h.update(flat.to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()


def model_settings(fm, k: int, window: int) -> dict:
    """What decides the scores: weight fingerprints of base and adapter, k, W, scope, dtype.

    A model may carry its base fingerprint as ``fm.base_fingerprint`` (a tensor-parallel model, whose
    base parameters are shards, carries that of the full checkpoint: see `focus_nemo.nemo.scoring`);
    otherwise the base's state dict is fingerprinted. Adapter tensors come from ``fm.focus_state_dict()``
    when the model has it (full tensors gathered over tensor-parallel ranks: collective, call it on
    every rank), else from ``fm.focus_parameters()``.
    """
    check_k_window(k, window)
    p = next(fm.parameters())
    base_fp = getattr(fm, "base_fingerprint", None)
    if base_fp is None:
        base_fp = tensor_fingerprint(sorted(fm.base.state_dict().items()))
    adapter = fm.focus_state_dict() if hasattr(fm, "focus_state_dict") else fm.focus_parameters()
    return {
        "score": SCORE_DEFINITION,
        "units": UNITS,
        "model_fingerprint": base_fp,
        "adapter_fingerprint": tensor_fingerprint(sorted(adapter.items())),
        "k": k,
        "window": window,
        "scope": fm.config.scope,
        "dtype": str(p.dtype).removeprefix("torch."),
    }


def add_model_arguments(parser) -> None:
    """The command-line options of the scoring recipes that choose the model and how it streams."""
    parser.add_argument("--checkpoint", default="embedded", help="embedded, random:<preset> or a checkpoint path")
    parser.add_argument("--config", default="", help="config of the checkpoint: a preset name or Arc's YAML "
                        "(e.g. evo2-7b-262k.yml); default: the checkpoint's own or, for Arc files, the published "
                        "model of its shapes")
    parser.add_argument("--adapter", default="embedded", help="embedded, none (untrained) or an adapter directory")
    parser.add_argument("--k", type=int, help="bases per Focus token (default: the adapter's)")
    parser.add_argument("--window", type=int, help="window W in bases (default: the adapter's)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="bases per model call")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_scoring_model(checkpoint: str = "embedded", adapter: str | None = "embedded", k: int | None = None,
                       window: int | None = None, dtype: str = "float32", device: str = "cpu",
                       config: str | None = None):
    """A FocusModel for scoring and the (k, W) to stream with.

    With an adapter, k and W default to the adapter's; without one (`adapter=None`: Focus projections
    copied from the base) they default to `FocusConfig`'s. A k the adapter was not trained with is
    allowed (the ratio is a run-time choice) but logged.
    """
    from focus_nemo.inference import load_focus_model

    focus = untrained_focus_config(k, window) if adapter is None else None
    fm = load_focus_model(checkpoint, adapter=adapter, dtype=dtype, device=device, focus=focus, config=config)
    k, window = scoring_ratio(fm, adapter, k, window)
    return fm, k, window


def untrained_focus_config(k: int | None, window: int | None):
    """The FocusConfig of an untrained adapter: `FocusConfig`'s defaults where k or W is not given."""
    from focus_nemo.focus import FocusConfig

    default = FocusConfig()
    return FocusConfig(k=default.k if k is None else k, window=default.window if window is None else window)


def scoring_ratio(fm, adapter: str | None, k: int | None, window: int | None) -> tuple[int, int]:
    """(k, W) to stream with: the given values, else the model's; warns when an adapter was not trained
    with them."""
    k = fm.config.k if k is None else k
    window = fm.config.window if window is None else window
    check_k_window(k, window)
    trained = set(fm.config.train_ratios) | {fm.config.k}
    if adapter is not None and (k not in trained or window != fm.config.window):
        logger.warning("adapter %s was trained with k in %s, W=%d; scoring with k=%d, W=%d",
                       adapter, sorted(trained), fm.config.window, k, window)
    return k, window


class LoglikStream:
    """Per-base log-likelihoods of a sequence fed in consecutive pieces of any length.

    `feed` returns one float32 score per fed base (NaN rules in the module docstring); `fork` copies the
    stream so that two continuations can be scored from one shared prefix.

    Args:
        fm: a FocusModel.
        k, window: the FOCUS ratio and window to stream with.
        chunk_size: bases per `FocusModel.forward_chunk` call (bounds the logits held at once).
    """

    def __init__(self, fm, k: int, window: int, chunk_size: int = DEFAULT_CHUNK) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}")
        self.fm, self.chunk_size = fm, chunk_size
        self.device = next(fm.parameters()).device
        self.state = fm.init_state(1, k, window)
        self.last_logits: torch.Tensor | None = None  # [V] fp32: predicts the next fed base

    @property
    def offset(self) -> int:
        """Bases fed so far."""
        return self.state.offset

    @torch.no_grad()
    def feed(self, raw: np.ndarray | bytes, on_chunk: Callable[[int], None] | None = None) -> np.ndarray:
        """Score the next bases `raw` (bytes or uint8 array, case preserved); returns float32 [len(raw)]."""
        raw = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, (bytes, bytearray)) else np.asarray(raw)
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise TypeError(f"feed: expected a 1-D uint8 array of bases, got {raw.dtype} {raw.shape}")
        out = np.empty(raw.shape[0], dtype=np.float32)
        for s in range(0, raw.shape[0], self.chunk_size):
            piece = _UPPER[raw[s: s + self.chunk_size]]
            tokens = torch.from_numpy(piece.astype(np.int64))[None].to(self.device)
            logits, self.state = self.fm.forward_chunk(tokens, self.state)
            logits = logits[0].float()
            rows = logits[:-1] if self.last_logits is None else torch.cat([self.last_logits[None], logits[:-1]])
            targets = tokens[0, -rows.shape[0]:] if rows.shape[0] else tokens[0, :0]
            ll = (rows.gather(1, targets[:, None])[:, 0] - torch.logsumexp(rows, 1)).cpu().numpy()
            n = piece.shape[0]
            res = out[s: s + n]
            res[n - ll.shape[0]:] = ll
            res[: n - ll.shape[0]] = np.nan  # the very first base of the stream
            res[~_IS_ACGT[piece]] = np.nan
            self.last_logits = logits[-1].clone()
            if on_chunk is not None:
                on_chunk(n)
        return out

    def fork(self) -> LoglikStream:
        """An independent copy (state and pending prediction) that continues from the same point."""
        other = copy.copy(self)
        other.state = copy.deepcopy(self.state)
        other.last_logits = None if self.last_logits is None else self.last_logits.clone()
        return other


def sequence_loglik(fm, seq: str | bytes | np.ndarray, k: int | None = None, window: int | None = None,
                    chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
    """Per-base scores (float32 [len(seq)]) of one sequence, streamed from its first base."""
    if isinstance(seq, str):
        seq = seq.encode("ascii")
    stream = LoglikStream(fm, fm.config.k if k is None else k, fm.config.window if window is None else window,
                          chunk_size)
    return stream.feed(seq) if len(seq) else np.zeros(0, dtype=np.float32)


# --------------------------------------------------------------------------------------------- files
class _NpzWriter:
    """Streams float32 scores into ``log_likelihood.npy`` inside an npz (zip, stored) of known length."""

    def __init__(self, path: Path, length: int) -> None:
        self.path, self.length, self.written = path, length, 0
        self.zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self.entry = self.zip.open("log_likelihood.npy", "w", force_zip64=True)
        header = {"descr": "<f4", "fortran_order": False, "shape": (length,)}
        np.lib.format.write_array_header_1_0(self.entry, header)

    def write(self, start: int, ll: np.ndarray) -> None:
        if start != self.written:
            raise RuntimeError(f"{self.path}: scores written out of order ({start} after {self.written})")
        self.entry.write(ll.astype("<f4", copy=False).tobytes())
        self.written += ll.shape[0]

    def close(self, meta: dict) -> None:
        self.entry.close()
        if self.written != self.length:
            raise RuntimeError(f"{self.path}: wrote {self.written} scores for a record of {self.length} bases")
        buf = io.BytesIO()
        np.save(buf, np.array(json.dumps(meta)))
        self.zip.writestr("meta.npy", buf.getvalue())
        self.zip.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.entry.close()
        with contextlib.suppress(Exception):
            self.zip.close()


class _BedGraphWriter:
    """One gzipped bedGraph line per scored base (0-based half-open); NaN positions get no line."""

    def __init__(self, path: Path, record: str) -> None:
        self.path, self.record = path, record
        self.fh = gzip.open(path, "wt", compresslevel=6, newline="\n")

    def write(self, start: int, ll: np.ndarray) -> None:
        idx = np.flatnonzero(~np.isnan(ll))
        rec = self.record
        self.fh.write("".join(f"{rec}\t{p}\t{p + 1}\t{v:.9g}\n"
                              for p, v in zip((idx + start).tolist(), ll[idx].tolist(), strict=True)))

    def close(self, meta: dict) -> None:
        self.fh.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.fh.close()


def safe_stem(name: str) -> str:
    """File stem of a record: characters outside ``A-Za-z0-9._-`` become ``_``; never hidden."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return "_" + stem if stem.startswith(".") else stem


def parse_formats(fmt: str | Sequence[str]) -> tuple[str, ...]:
    """``npz``, ``bedgraph``, ``both`` or a list of those -> sorted tuple of formats."""
    items = [fmt] if isinstance(fmt, str) else list(fmt)
    out: set[str] = set()
    for f in items:
        if f == "both":
            out.update(FORMATS)
        elif f in FORMATS:
            out.add(f)
        else:
            raise ScoringError(f"format: {f!r} is not one of npz, bedgraph, both")
    if not out:
        raise ScoringError("format: no output format given")
    return tuple(sorted(out))


# ------------------------------------------------------------------------------------ FASTA scoring
@dataclass
class ScoreRun:
    """What `score_fasta` did: records scored now, records skipped as already finished, summary rows."""

    out_dir: Path
    scored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ScoringError(f"{path}: unreadable manifest ({e}); score into a new output directory") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ScoringError(f"{path}: not a {MANIFEST_FORMAT} manifest")
    return manifest


def _write_manifest(out: Path, manifest: dict) -> None:
    durable_write_bytes(out / MANIFEST, json.dumps(manifest, indent=2).encode())


def _fmt(value) -> str:
    if value is None:
        return "nan"
    if isinstance(value, str):
        return value
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def _write_summary(out: Path, manifest: dict) -> list[dict]:
    rows = [rec["stats"] for rec in manifest["records"].values()]
    rows += [row for name, row in manifest.get("not_scored", {}).items() if name not in manifest["records"]]
    lines = ["\t".join(SUMMARY_COLUMNS)] + ["\t".join(_fmt(r.get(c)) for c in SUMMARY_COLUMNS) for r in rows]
    durable_write_bytes(out / SUMMARY, ("\n".join(lines) + "\n").encode())
    return rows


def _settings_diff(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} in the directory, {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)]


def _record_hash(genome, name: str, read_size: int) -> str:
    h = hashlib.sha256()
    n = genome.length(name)
    for s in range(0, n, read_size):
        h.update(genome.fetch(name, s, min(n, s + read_size)).tobytes())
    return h.hexdigest()


def _finished(out: Path, entry: dict, formats: Sequence[str], genome, name: str, read_size: int) -> bool:
    """Record `name` is done: every output exists with its recorded checksum, from the same sequence.

    Raises ScoringError when the FASTA's sequence is not the one that was scored."""
    for fmt in formats:
        info = entry["files"].get(fmt)
        path = out / info["file"] if info else None
        if path is None or not path.is_file() or sha256_file(path) != info["sha256"]:
            logger.warning("%s: %s output of record %s is missing or does not match its checksum; scoring it "
                           "again", out, fmt, name)
            return False
    if entry["length"] != genome.length(name) or entry["sequence_sha256"] != _record_hash(genome, name, read_size):
        raise ScoringError(f"{out}: record {name!r} was scored from a different sequence (length "
                           f"{entry['length']}, now {genome.length(name)}, or different bases); score this "
                           f"FASTA into a new output directory")
    return True


def _prepare_out_dir(out: Path, settings: dict, resume: bool) -> dict:
    """Start or reopen the (existing, locked) output directory; returns its manifest."""
    entries = [p.name for p in out.iterdir()]
    ours = [n for n in entries if n != _LOCK and not _TMP.match(n)]
    if not resume and ours:
        raise ScoringError(f"{out}: output directory exists and is not empty; pass resume=True (--resume) "
                           f"to continue a run there, or choose a new directory")
    if MANIFEST not in entries:
        if ours:
            raise ScoringError(f"{out}: cannot resume: the directory has no {MANIFEST} but holds other files "
                               f"({', '.join(sorted(ours)[:5])})")
        manifest = {"format": MANIFEST_FORMAT, "settings": settings, "records": {}}
        _write_manifest(out, manifest)
        return manifest
    manifest = _read_manifest(out / MANIFEST)
    diff = _settings_diff(manifest.get("settings", {}), settings)
    if diff:
        raise ScoringError(f"{out}: cannot resume with different scoring settings ({'; '.join(diff)}); use a new "
                           f"output directory or the original settings")
    return manifest


@contextlib.contextmanager
def _locked(out: Path):
    """One run per output directory at a time (POSIX advisory lock; released when the process dies)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(out / _LOCK, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ScoringError(f"{out}: another scoring run is writing to this directory") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _progress(enabled: bool, unit: str = "bases"):
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} {unit}/s" if speed else f"- {unit}/s")

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.completed:,.0f}/{task.total:,.0f}"), Rate(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), disable=not enabled)


def _rank_world() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, or (0, 1) when it is not initialised."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _from_rank0(obj, world: int):
    """Rank 0's `obj` on every rank (collective when world > 1)."""
    if world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def score_fasta(fasta, out_dir: str | os.PathLike, fm, *, records: Sequence[str] | None = None,
                k: int | None = None, window: int | None = None, formats: str | Sequence[str] = "npz",
                chunk_size: int = DEFAULT_CHUNK, read_size: int = DEFAULT_READ, resume: bool = False,
                progress: bool = True, info: dict | None = None, allow_empty: bool = False) -> ScoreRun:
    """Score every base of the records of a FASTA file by streaming them through FOCUS.

    Under an initialised `torch.distributed` every rank must call this with the same arguments and its
    shard of one tensor-parallel model; rank 0 writes (see the module docstring), the others compute
    and discard, and their `ScoreRun` has the same ``scored`` and ``skipped`` lists but no summary.

    Args:
        fasta: a path (plain, gzip or bgzip FASTA; see `focus_nemo.data.open_genome`) or an open Genome.
        out_dir: output directory (contents in the module docstring).
        fm: a FocusModel (see `load_scoring_model`) or, tensor parallel, a NemoFocusModel.
        records: record names or ``chr`` aliases to score, in this order; None: every non-empty record.
        k, window: FOCUS ratio and window (default: the model's FocusConfig).
        formats: ``npz``, ``bedgraph``, ``both`` or a list.
        chunk_size: bases per model call. read_size: bases per FASTA read.
        resume: continue in a directory of an earlier run with the same settings, skipping its finished
            records; without it the directory must not exist or be empty.
        progress: show a progress bar (rank 0 only).
        info: extra entries recorded in the manifest (not compared on resume), e.g. checkpoint paths.
        allow_empty: accept a run whose output directory ends with no scored base at all (every record
            empty, only N/IUPAC, or a single base); by default that is an error, raised after
            ``summary.tsv`` is written with the reason for each record.

    Raises:
        ScoringError: unusable output directory, settings or sequence differing from the directory's, or
            nothing scored (unless `allow_empty`).
    """
    from focus_nemo.data import open_genome

    rank, world = _rank_world()
    genome = open_genome(fasta) if isinstance(fasta, (str, os.PathLike)) else fasta
    k = fm.config.k if k is None else k
    window = fm.config.window if window is None else window
    if read_size < 1:
        raise ValueError(f"read_size: must be >= 1, got {read_size}")
    formats = parse_formats(formats)
    settings = {**model_settings(fm, k, window), "formats": list(formats)}  # collective under TP
    requested = list(dict.fromkeys(genome.resolve(n) for n in (genome.names if records is None else records)))
    names = genome.records(records)  # empty records left out (FastaWarning) or an error, per the FASTA policy
    empty = {n: _not_scored_row(n, "skipped", "empty record (a header with no sequence)")
             for n in requested if n not in set(names)}
    stems: dict[str, str] = {}
    for name in names:
        stem = safe_stem(name)
        if stem in stems:
            raise ScoringError(f"records {stems[stem]!r} and {name!r} map to the same output file name {stem!r}")
        stems[stem] = name
    out = Path(out_dir)
    run = ScoreRun(out)
    with contextlib.ExitStack() as stack:
        manifest: dict = {}
        if rank == 0:
            try:
                manifest, todo = _open_run(stack, out, settings, resume, names, stems, formats, genome, read_size,
                                           run)
                manifest["not_scored"] = empty
                manifest["info"] = {**manifest.get("info", {}), **(info or {}), "chunk_size": chunk_size,
                                    "device": str(next(fm.parameters()).device)}
                if world > 1 or "tensor_parallel" in manifest["info"]:
                    manifest["info"]["tensor_parallel"] = world
                plan = ("ok", todo, run.skipped)
            except Exception as e:
                _from_rank0(("error", f"{type(e).__name__}: {e}"), world)
                raise
            _from_rank0(plan, world)
        else:
            plan = _from_rank0(None, world)
            if plan[0] == "error":
                raise ScoringError(f"rank 0 could not start scoring: {plan[1]}")
            todo, run.skipped = plan[1], list(plan[2])
        with _progress(progress and rank == 0) as bar:
            task = bar.add_task("scoring", total=sum(genome.length(n) for n in todo))
            for name in todo:
                bar.update(task, description=name)
                advance = lambda n: bar.advance(task, n)  # noqa: E731
                if rank != 0:
                    for _ in _record_scores(genome, name, fm, k, window, chunk_size, read_size, advance):
                        pass
                    run.scored.append(name)
                    continue
                entry = _score_record(genome, name, out, fm, k, window, formats, chunk_size, read_size, advance)
                manifest["records"][name] = entry
                _write_manifest(out, manifest)
                _write_summary(out, manifest)
                run.scored.append(name)
        nothing = None
        if rank == 0:
            _write_manifest(out, manifest)
            run.summary = _write_summary(out, manifest)
            if not allow_empty and not any(r["scored"] for r in run.summary):
                why = "; ".join(f"{r['record']}: {r.get('note') or 'nothing scored'}" for r in run.summary)
                nothing = (f"{out}: nothing was scored ({why or 'no records'}); the reasons are in {SUMMARY}. "
                           f"Pass allow_empty=True (--allow-empty) to accept a run that scores nothing")
        nothing = _from_rank0(nothing, world)
        if nothing is not None:
            raise ScoringError(nothing)
    return run


def _not_scored_row(name: str, status: str, note: str, length: int = 0) -> dict:
    """Summary row of a record that was not streamed."""
    return {"record": name, "length": length, "scored": 0, "not_scored": length, "n_bases": 0, "iupac_bases": 0,
            "soft_masked": 0, "soft_masked_scored": 0, "sum_ll_nats": 0.0, "mean_ll_nats": None,
            "bits_per_base": None, "perplexity": None, "seconds": None, "bases_per_s": None, "status": status,
            "note": note}


def _nothing_scored_note(n: int, first_acgt: bool, n_bases: int, iupac: int) -> str:
    if n == 1 and first_acgt:
        return "a single base: the first base of a sequence has no prediction"
    return f"no A/C/G/T base after the first ({n_bases} N, {iupac} other IUPAC code(s) of {n} bases)"


def _open_run(stack: contextlib.ExitStack, out: Path, settings: dict, resume: bool, names: list[str],
              stems: dict[str, str], formats: Sequence[str], genome, read_size: int, run: ScoreRun
              ) -> tuple[dict, list[str]]:
    """Create or reopen and lock (until `stack` closes) the output directory; returns its manifest and
    the records still to score (finished ones are added to ``run.skipped``)."""
    if out.exists() and not out.is_dir():
        raise ScoringError(f"{out}: output path exists and is not a directory")
    if not resume and out.is_dir() and any(out.iterdir()):
        raise ScoringError(f"{out}: output directory exists and is not empty; pass resume=True (--resume) "
                           f"to continue a run there, or choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    stack.enter_context(_locked(out))
    manifest = _prepare_out_dir(out, settings, resume)
    for other, entry in manifest["records"].items():
        if other != stems.get(entry["stem"], other):
            raise ScoringError(f"{out}: record {stems[entry['stem']]!r} would overwrite the outputs of "
                               f"record {other!r} (both map to the file name {entry['stem']!r})")
    if resume:
        for leftover in (p for p in out.iterdir() if _TMP.match(p.name)):
            logger.info("%s: removing %s left by an interrupted run", out, leftover.name)
            leftover.unlink()
    todo = []
    for name in names:
        entry = manifest["records"].get(name)
        if entry is not None and _finished(out, entry, formats, genome, name, read_size):
            run.skipped.append(name)
        else:
            manifest["records"].pop(name, None)
            todo.append(name)
    if run.skipped:
        logger.info("%s: %d record(s) already finished, skipped: %s", out, len(run.skipped),
                    ", ".join(run.skipped))
    return manifest, todo


def _record_scores(genome, name: str, fm, k: int, window: int, chunk_size: int, read_size: int,
                   advance: Callable[[int], None]):
    """(start, bases, scores) of each read of record `name`, streamed from its first base."""
    n = genome.length(name)
    stream = LoglikStream(fm, k, window, chunk_size)
    for s in range(0, n, read_size):
        raw = genome.fetch(name, s, min(n, s + read_size))
        yield s, raw, stream.feed(raw, advance)


def _score_record(genome, name: str, out: Path, fm, k: int, window: int, formats: Sequence[str],
                  chunk_size: int, read_size: int, advance: Callable[[int], None]) -> dict:
    """Stream one record into temporary output files, rename them into place, return its manifest entry."""
    t0 = time.perf_counter()
    n = genome.length(name)
    stem = safe_stem(name)
    finals = {fmt: out / (stem + SUFFIX[fmt]) for fmt in formats}
    with contextlib.ExitStack() as stack:
        tmps = {fmt: stack.enter_context(staged(p)) for fmt, p in finals.items()}
        writers = {}
        try:
            if "npz" in tmps:
                writers["npz"] = _NpzWriter(tmps["npz"], n)
            if "bedgraph" in tmps:
                writers["bedgraph"] = _BedGraphWriter(tmps["bedgraph"], name)
            seq_hash = hashlib.sha256()
            counts = dict.fromkeys(("scored", "n_bases", "iupac_bases", "soft_masked", "soft_masked_scored"), 0)
            total = 0.0
            first_acgt = False
            for s, raw, ll in _record_scores(genome, name, fm, k, window, chunk_size, read_size, advance):
                seq_hash.update(raw.tobytes())
                if s == 0:
                    first_acgt = bool(_IS_ACGT[_UPPER[raw[0]]])
                ok = ~np.isnan(ll)
                lower = _IS_LOWER[raw]
                up = _UPPER[raw]
                counts["scored"] += int(ok.sum())
                counts["n_bases"] += int(_IS_N[raw].sum())
                counts["iupac_bases"] += int((~_IS_ACGT[up] & ~_IS_N[raw]).sum())
                counts["soft_masked"] += int(lower.sum())
                counts["soft_masked_scored"] += int((lower & ok).sum())
                total += float(ll[ok].astype(np.float64).sum())
                for w in writers.values():
                    w.write(s, ll)
            seconds = time.perf_counter() - t0
            mean = total / counts["scored"] if counts["scored"] else None
            stats = {
                "record": name, "length": n, "scored": counts["scored"], "not_scored": n - counts["scored"],
                **{c: counts[c] for c in ("n_bases", "iupac_bases", "soft_masked", "soft_masked_scored")},
                "sum_ll_nats": total, "mean_ll_nats": mean,
                "bits_per_base": None if mean is None else -mean / math.log(2),
                "perplexity": None if mean is None else math.exp(-mean),
                "seconds": seconds, "bases_per_s": n / seconds if seconds > 0 else None,
                "status": "scored" if counts["scored"] else "nothing_scored",
                "note": "" if counts["scored"] else _nothing_scored_note(n, first_acgt, counts["n_bases"],
                                                                        counts["iupac_bases"]),
            }
            meta = {"record": name, "length": n, "units": UNITS, "score": SCORE_DEFINITION, "k": k,
                    "window": window, "first_base_acgt": first_acgt,
                    **{c: stats[c] for c in ("scored", "n_bases", "iupac_bases", "soft_masked")}}
            for w in writers.values():
                w.close(meta)
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        files = {}
        for fmt, tmp in tmps.items():
            files[fmt] = {"file": finals[fmt].name, "sha256": seal(tmp)}
        for fmt, tmp in tmps.items():
            os.replace(tmp, finals[fmt])
        fsync_dir(out)
    return {"stem": stem, "length": n, "sequence_sha256": seq_hash.hexdigest(), "files": files, "stats": stats}


def load_scores(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """(log-likelihoods float32 [L], metadata) of a ``<record>.npz`` written by `score_fasta`."""
    with np.load(path, allow_pickle=False) as z:
        return z["log_likelihood"], json.loads(str(z["meta"]))


# ---------------------------------------------------------------------------------- variant scoring
@dataclass
class Variant:
    """One REF -> ALT change; `fields` are the row's input columns, `where` names the file and line."""

    chrom: str
    pos: int  # 1-based
    ref: str
    alt: str
    fields: dict[str, str]
    where: str

    def describe(self) -> str:
        return f"{self.where} ({self.chrom}:{self.pos} {self.ref}>{self.alt})"


def _open_text(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", newline="")
    return open(path, newline="")


def read_variants(path: str | os.PathLike) -> tuple[list[str], list[Variant]]:
    """Read a VCF (``.vcf``/``.vcf.gz``, recognised by name or a ``##fileformat=VCF`` first line) or a TSV
    with a header naming at least ``chrom``, ``pos`` (1-based), ``ref``, ``alt`` (any case; a leading
    ``#`` on the header is allowed; ``##`` lines are skipped).

    A VCF gives columns ``chrom pos id ref alt`` and one row per ALT allele of a multi-allelic record.
    A TSV keeps all its columns. Returns (column names, variants).

    Raises:
        ScoringError: malformed file or row (message names file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise ScoringError(f"{path}: variant file does not exist")
    try:
        with _open_text(path) as fh:
            first = fh.readline()
            fh.seek(0)
            name = path.name.lower()
            if first.startswith("##fileformat=VCF") or name.endswith((".vcf", ".vcf.gz", ".vcf.bgz")):
                return _read_vcf(path, fh)
            return _read_tsv(path, fh)
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as e:
        raise ScoringError(f"{path}: could not read ({type(e).__name__}: {e})") from None


def _parse_pos(path: Path, line_no: int, text: str) -> int:
    try:
        pos = int(text)
    except ValueError:
        pos = 0
    if pos < 1 or not text.strip().isdigit():
        raise ScoringError(f"{path} line {line_no}: POS {text!r} is not a 1-based position (integer >= 1)")
    return pos


def _read_vcf(path: Path, fh) -> tuple[list[str], list[Variant]]:
    cols = ["chrom", "pos", "id", "ref", "alt"]
    out: list[Variant] = []
    header_seen = False
    for line_no, line in enumerate(fh, start=1):
        line = line.rstrip("\r\n")
        if line.startswith("##"):
            continue
        if line.startswith("#"):
            head = line[1:].split("\t")
            if head[:8] != ["CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO"]:
                raise ScoringError(f"{path} line {line_no}: VCF header must start with "
                                   f"#CHROM POS ID REF ALT QUAL FILTER INFO (tab-separated), got {line[:80]!r}")
            header_seen = True
            continue
        if not line.strip():
            continue
        if not header_seen:
            raise ScoringError(f"{path} line {line_no}: data line before the #CHROM header line")
        parts = line.split("\t")
        if len(parts) < 8:
            raise ScoringError(f"{path} line {line_no}: {len(parts)} tab-separated fields, a VCF data line has "
                               f"at least 8")
        chrom, pos_text, vid, ref, alts = parts[:5]
        pos = _parse_pos(path, line_no, pos_text)
        for alt in alts.split(","):
            fields = {"chrom": chrom, "pos": pos_text, "id": vid, "ref": ref, "alt": alt}
            out.append(Variant(chrom, pos, ref, alt, fields, f"{path} line {line_no}"))
    if not header_seen:
        raise ScoringError(f"{path}: no #CHROM header line (not a VCF file?)")
    return cols, out


def _read_tsv(path: Path, fh) -> tuple[list[str], list[Variant]]:
    reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
    cols: list[str] | None = None
    key: dict[str, int] = {}
    out: list[Variant] = []
    for row in reader:
        line_no = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if row[0].startswith("##"):
            continue
        if cols is None:
            cols = [c.strip() for c in row]
            cols[0] = cols[0].lstrip("#")
            lower = [c.lower() for c in cols]
            missing = [c for c in ("chrom", "pos", "ref", "alt") if c not in lower]
            if missing:
                raise ScoringError(f"{path} line {line_no}: header {cols} lacks column(s) {missing} "
                                   f"(need chrom, pos, ref, alt)")
            clash = [c for c in cols if c.lower() in VARIANT_COLUMNS]
            if clash or len(set(lower)) != len(lower):
                raise ScoringError(f"{path} line {line_no}: header has duplicate columns or output column "
                                   f"names {clash or cols}")
            key = {c: lower.index(c) for c in ("chrom", "pos", "ref", "alt")}
            continue
        if len(row) != len(cols):
            raise ScoringError(f"{path} line {line_no}: {len(row)} tab-separated fields, the header has {len(cols)}")
        pos = _parse_pos(path, line_no, row[key["pos"]])
        out.append(Variant(row[key["chrom"]], pos, row[key["ref"]], row[key["alt"]], dict(zip(cols, row, strict=True)),
                           f"{path} line {line_no}"))
    if cols is None:
        raise ScoringError(f"{path}: empty variant file (no header line)")
    return cols, out


UNSUPPORTED_KINDS = ("missing", "spanning_deletion", "symbolic", "breakend", "not_acgt", "alt_equals_ref")
"""Kinds of allele `score_variants` cannot score as a sequence change, counted in its result."""


def _unsupported(v: Variant) -> tuple[str, str] | None:
    """(kind, why) when the variant cannot be scored as a sequence change (kinds in `UNSUPPORTED_KINDS`),
    or None when it can."""
    for what, allele in (("REF", v.ref), ("ALT", v.alt)):
        if not allele or allele == ".":
            return "missing", f"{what} {allele!r} is a missing allele"
        if allele == "*":
            return "spanning_deletion", f"{what} '*' is a spanning-deletion allele (an overlapping deletion)"
        if allele.startswith("<"):
            return "symbolic", f"{what} {allele!r} is a symbolic allele (a structural variant, no sequence)"
        if any(c in allele for c in "[]"):
            return "breakend", f"{what} {allele!r} is a breakend allele"
        if not all(c in "ACGTacgt" for c in allele):
            return "not_acgt", f"{what} {allele!r} has a base other than A/C/G/T"
    if v.ref.upper() == v.alt.upper():
        return "alt_equals_ref", "ALT equals REF"
    return None


@dataclass
class VariantScore:
    """Scores of one variant: window on the reference (0-based half-open) and the two window sums."""

    window_start: int
    window_end: int
    ll_ref: float
    ll_alt: float
    scored_ref: int
    scored_alt: int
    flank_ref: float = math.nan  # sum over the scored positions of the shared right flank, reference window
    flank_alt: float = math.nan  # the same positions' bases in the alt window
    scored_flank: int = 0
    ref_scores: np.ndarray | None = None
    alt_scores: np.ndarray | None = None

    @property
    def delta_ll(self) -> float:
        return self.ll_alt - self.ll_ref

    @property
    def delta_ll_flank(self) -> float:
        """Log-likelihood change of the shared right flank given the changed prefix (NaN without one)."""
        return self.flank_alt - self.flank_ref if self.scored_flank else math.nan

    @property
    def delta_mean_ll(self) -> float:
        """Change of the mean score per scored base of the window (NaN when a window has none)."""
        if not (self.scored_ref and self.scored_alt):
            return math.nan
        return self.ll_alt / self.scored_alt - self.ll_ref / self.scored_ref


def variant_windows(genome, chrom: str, start: int, ref: str, alt: str, flank: int
                    ) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """(window_start, window_end, left flank, reference bases at REF, right flank) for REF at 0-based
    `start` of `chrom`, flanks clipped at the record's ends."""
    n = genome.length(chrom)
    end = start + len(ref)
    if end > n:
        raise IndexError(f"REF [{start}, {end}) runs past the end of record {chrom!r} (length {n})")
    ws, we = max(0, start - flank), min(n, end + flank)
    return ws, we, genome.fetch(chrom, ws, start), genome.fetch(chrom, start, end), genome.fetch(chrom, end, we)


def score_variant(fm, genome, chrom: str, pos: int, ref: str, alt: str, flank: int, k: int, window: int,
                  chunk_size: int = DEFAULT_CHUNK, keep_scores: bool = False) -> VariantScore:
    """Score REF -> ALT at 1-based `pos` of `chrom` (REF assumed checked): the shared prefix (left flank +
    common prefix of the alleles) is streamed once, then the stream is forked for the two suffixes."""
    ws, we, left, _, right = variant_windows(genome, chrom, pos - 1, ref, alt, flank)
    ref_b, alt_b = ref.upper().encode(), alt.upper().encode()
    common = 0
    while common < min(len(ref_b), len(alt_b)) and ref_b[common] == alt_b[common]:
        common += 1
    stream = LoglikStream(fm, k, window, chunk_size)
    prefix = np.concatenate([left, np.frombuffer(ref_b[:common], dtype=np.uint8)])
    pre = stream.feed(prefix) if prefix.size else np.zeros(0, dtype=np.float32)
    fork = stream.fork()
    suffixes = []
    for s, allele in ((stream, ref_b), (fork, alt_b)):
        tail = np.concatenate([np.frombuffer(allele[common:], dtype=np.uint8), right])
        suffixes.append(s.feed(tail) if tail.size else np.zeros(0, dtype=np.float32))
    full = [np.concatenate([pre, suf]) for suf in suffixes]
    sums = [float(np.nansum(x.astype(np.float64))) for x in full]
    counts = [int((~np.isnan(x)).sum()) for x in full]
    # the shared right flank: the last len(right) positions of both windows (same bases, same NaN positions)
    flanks = [x[x.shape[0] - right.shape[0]:] for x in full]
    flank_sums = [float(np.nansum(x.astype(np.float64))) for x in flanks]
    scored_flank = int((~np.isnan(flanks[0])).sum())
    if scored_flank != int((~np.isnan(flanks[1])).sum()):  # only if a flank base could be the first of a window
        raise RuntimeError(f"{chrom}:{pos}: right flank scored at different positions in the two windows")
    return VariantScore(ws, we, sums[0], sums[1], counts[0], counts[1], flank_sums[0], flank_sums[1], scored_flank,
                        *(full if keep_scores else (None, None)))


def score_variants(variants: str | os.PathLike, fasta, out: str | os.PathLike, fm, *, flank: int = 8192,
                   k: int | None = None, window: int | None = None, chunk_size: int = DEFAULT_CHUNK,
                   on_ref_mismatch: str = "error", on_unsupported: str = "skip", overwrite: bool = False,
                   progress: bool = True, allow_empty: bool = False) -> dict:
    """Score every variant of a VCF/TSV against a reference FASTA; write a TSV (definitions in the module
    docstring). Every input row is checked before any scoring starts.

    Output columns: the input columns, then ``window_start window_end`` (0-based half-open on the
    reference), ``ll_ref ll_alt delta_ll`` (nats), ``delta_ll_flank`` (change on the shared right flank)
    and ``delta_mean_ll`` (change of the per-base mean), ``scored_ref scored_alt scored_flank`` (positions
    summed), ``status`` (``ok``, ``ref_mismatch`` or ``unsupported``) and ``note`` (why a row was not
    scored). Use ``delta_ll`` for SNVs/MNVs and ``delta_ll_flank`` to rank indels (module docstring).

    Args:
        on_ref_mismatch: ``error`` (default) stops at the first REF that differs from the reference (case
            ignored), naming the row; ``skip`` writes the row with status ``ref_mismatch`` and no scores.
        on_unsupported: alleles that are not plain A/C/G/T sequences (symbolic ``<DEL>``, breakends, ``*``,
            missing ``.``, ``N``/IUPAC bases, ALT equal to REF), common in real VCFs (gnomAD, ClinVar):
            ``skip`` (default) writes the row with status ``unsupported``, the reason in ``note``, and
            counts it by kind; ``error`` stops at the first one, naming the row.
        overwrite: replace an existing output file (otherwise an error).
        allow_empty: accept a file in which no row could be scored; by default that is an error, raised
            after the output (with each row's reason) is written.

    Returns:
        counts: ``rows``, ``ok``, ``ref_mismatch``, ``unsupported``, ``unsupported_kinds`` (kind -> rows,
        kinds in `UNSUPPORTED_KINDS`), plus ``seconds``.

    Raises:
        ScoringError: a bad row or file (named), or no row scored (unless `allow_empty`).
    """
    from focus_nemo.data import open_genome
    from focus_nemo.data.fasta import RecordNotFoundError

    for opt, val in (("on_ref_mismatch", on_ref_mismatch), ("on_unsupported", on_unsupported)):
        if val not in ("error", "skip"):
            raise ScoringError(f"{opt}: {val!r} is not 'error' or 'skip'")
    if flank < 0:
        raise ScoringError(f"flank: must be >= 0, got {flank}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ScoringError(f"{out}: output file exists (pass overwrite=True / --overwrite to replace it)")
    genome = open_genome(fasta) if isinstance(fasta, (str, os.PathLike)) else fasta
    k = fm.config.k if k is None else k
    window = fm.config.window if window is None else window
    check_k_window(k, window)
    cols, rows = read_variants(variants)

    plan: list[tuple[Variant, str, str, str]] = []  # variant, resolved record, status, note
    kinds = dict.fromkeys(UNSUPPORTED_KINDS, 0)
    for v in rows:
        unsupported = _unsupported(v)
        if unsupported is not None:
            kind, why = unsupported
            if on_unsupported == "error":
                raise ScoringError(f"{v.describe()}: cannot score: {why} (on_unsupported='skip' flags such rows)")
            kinds[kind] += 1
            plan.append((v, "", "unsupported", why))
            continue
        try:
            rec = genome.resolve(v.chrom)
            _, _, _, ref_seq, _ = variant_windows(genome, rec, v.pos - 1, v.ref, v.alt, 0)
        except (RecordNotFoundError, IndexError) as e:
            raise ScoringError(f"{v.describe()}: {e}") from None
        found = ref_seq.tobytes().decode("ascii")
        if found.upper() != v.ref.upper():
            why = f"REF {v.ref!r} does not match the reference {found!r} at {rec}:{v.pos}"
            if on_ref_mismatch == "error":
                raise ScoringError(f"{v.describe()}: {why} (on_ref_mismatch='skip' flags such rows)")
            plan.append((v, rec, "ref_mismatch", why))
            continue
        plan.append((v, rec, "ok", ""))

    counts = {"rows": len(plan), "ok": 0, "ref_mismatch": 0, "unsupported": 0,
              "unsupported_kinds": {k: n for k, n in kinds.items() if n}}
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with staged(out) as tmp:
        with open(tmp, "w", newline="") as fh, _progress(progress, "variants") as bar:
            task = bar.add_task("variants", total=len(plan))
            fh.write("\t".join(list(cols) + list(VARIANT_COLUMNS)) + "\n")
            for v, rec, status, note in plan:
                counts[status] += 1
                values = [v.fields[c] for c in cols]
                if status == "ok":
                    s = score_variant(fm, genome, rec, v.pos, v.ref, v.alt, flank, k, window, chunk_size)
                    values += [str(s.window_start), str(s.window_end), f"{s.ll_ref:.6f}", f"{s.ll_alt:.6f}",
                               f"{s.delta_ll:.6f}", f"{s.delta_ll_flank:.6f}", f"{s.delta_mean_ll:.6f}",
                               str(s.scored_ref), str(s.scored_alt), str(s.scored_flank), status, note]
                else:
                    values += [""] * (len(VARIANT_COLUMNS) - 2) + [status, note]
                fh.write("\t".join(values) + "\n")
                bar.advance(task)
        seal(tmp)
        publish(tmp, out)
    counts["seconds"] = time.perf_counter() - t0
    if counts["unsupported"]:
        logger.warning("%s: %d row(s) not scored: unsupported alleles (%s); their rows have status 'unsupported'",
                       variants, counts["unsupported"],
                       ", ".join(f"{n} {k}" for k, n in counts["unsupported_kinds"].items()))
    if not counts["ok"] and not allow_empty:
        raise ScoringError(
            f"{variants}: no variant was scored ({counts['rows']} row(s): {counts['ref_mismatch']} REF mismatch, "
            f"{counts['unsupported']} unsupported); each row's reason is in {out}. Pass allow_empty=True "
            f"(--allow-empty) to accept a run that scores nothing")
    return counts


def read_tsv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a TSV written by this module (``summary.tsv`` or a variant score file), as dicts."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


__all__ = [
    "FORMATS", "LoglikStream", "SCORE_DEFINITION", "SUMMARY_COLUMNS", "ScoreRun", "ScoringError", "UNITS",
    "UNSUPPORTED_KINDS", "VARIANT_COLUMNS", "Variant", "VariantScore", "load_scores", "load_scoring_model",
    "model_settings", "parse_formats", "read_tsv", "read_variants", "safe_stem", "score_fasta", "score_variant",
    "score_variants", "scoring_ratio", "sequence_loglik", "tensor_fingerprint", "untrained_focus_config",
    "variant_windows",
]

"""Variant effect scores (`score_variants`): VCF/TSV parsing, the reference and alternative windows of
each variant, and ``delta_ll`` / ``delta_ll_flank`` / ``delta_mean_ll`` (see `focus_nemo.scoring`)."""

from __future__ import annotations

import csv
import gzip
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from focus_nemo.durable import publish, seal, staged
from focus_nemo.focus.config import check_k_window
from focus_nemo.scoring.outputs import input_files, progress_bar, same_file, writing
from focus_nemo.scoring.stream import DEFAULT_CHUNK, LoglikStream, ScoringError

logger = logging.getLogger(__name__)

VARIANT_COLUMNS = ("window_start", "window_end", "ll_ref", "ll_alt", "delta_ll", "delta_ll_flank", "delta_mean_ll",
                   "scored_ref", "scored_alt", "scored_flank", "status", "note")


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
        raise ScoringError(f"flank (--flank): must be >= 0, got {flank}")
    if chunk_size < 1:
        raise ScoringError(f"chunk_size (--chunk-size): must be >= 1, got {chunk_size}")
    out = Path(out)
    genome = open_genome(fasta) if isinstance(fasta, (str, os.PathLike)) else fasta
    variant_path = Path(variants)
    inputs = [variant_path] + [variant_path.with_name(variant_path.name + x) for x in (".tbi", ".csi")]
    for p in inputs + input_files(genome):  # never written over, with or without overwrite
        if same_file(out, p):
            raise ScoringError(f"{out}: the output file (--out) is an input of this run ({p}); choose another name")
    if out.is_dir():
        raise ScoringError(f"{out}: the output file (--out) is a directory")
    if out.exists() and not overwrite:
        raise ScoringError(f"{out}: output file exists (pass overwrite=True / --overwrite to replace it)")
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
    hint = "nothing was written to it (it is renamed into place only when complete)"
    with writing(out, out.parent, hint=hint):
        out.parent.mkdir(parents=True, exist_ok=True)
    with writing(out, out.parent, hint=hint), staged(out) as tmp:
        with open(tmp, "w", newline="") as fh, progress_bar(progress, "variants") as bar:
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
                bar.advance(task, 1)
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


def variant_counts_line(counts: dict) -> str:
    """One line summing up what `score_variants` returned: rows, scored, REF mismatches, unsupported, seconds."""
    kinds = ", ".join(f"{n} {kind}" for kind, n in counts["unsupported_kinds"].items())
    return (f"{counts['rows']} row(s): {counts['ok']} scored, {counts['ref_mismatch']} REF mismatch, "
            f"{counts['unsupported']} unsupported{f' ({kinds})' if kinds else ''}, {counts['seconds']:.1f} s")

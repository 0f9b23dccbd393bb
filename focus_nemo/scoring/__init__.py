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
  ``A-Z a-z 0-9 . _ -`` replaced by ``_``; a name longer than 96 characters is cut and ends with ``-`` and
  12 hex digits of its SHA-256 (the summary's ``files`` column maps names to files). Records whose file
  names would be equal, or differ only in case (macOS and Windows file systems fold case), are refused
  before anything is written.
* ``<record>.bedgraph.gz``: ``record  start  end  value`` per scored base, 0-based half-open, value in
  nats with 9 significant digits (exact for float32). Unscored positions have no line (bedGraph's way
  of saying "no data"); their counts are in ``summary.tsv``.
* ``summary.tsv``: one row per requested record in the order requested (the FASTA's order by default),
  written when the run starts and after every record (columns in `SUMMARY_COLUMNS`). ``status``:
  ``scored``; ``nothing_scored`` for a record streamed without a single scored base (only N/IUPAC, or one
  base); ``skipped`` for an empty record (a header with no sequence, no output files); ``pending`` for a
  record not finished yet (or interrupted: SIGTERM, SIGINT, ``kill -9``); ``failed`` for a record whose
  scoring raised an error. ``note`` gives the reason. ``not_scored`` = ``n_bases + iupac_bases + 1`` when
  the first base is A/C/G/T, else ``n_bases + iupac_bases``. ``flag`` is ``above_max_bits_per_base`` when
  the record's scored bases average more bits than ``max_bits_per_base`` (default 2, a uniform guess over
  A/C/G/T), with the reason in ``note``; while streaming, every megabase over that threshold is logged.
* A run that ends with no scored base in the directory at all is an error (after ``summary.tsv`` is
  written), unless ``allow_empty=True`` (``--allow-empty``) asks for it.
* ``manifest.json``: ``complete`` (false until every requested record is finished), the scoring settings,
  the FASTA's identity (files with their size, record names and lengths), the requested records and, per
  finished record, its output files with SHA-256, its length and the SHA-256 of its sequence; its own
  SHA-256 in ``checksum``.

Every output file is written under a temporary name (``.<name>.<pid>@<host>.<random>.tmp``) and renamed
when complete (`focus_nemo.durable`); the manifest is rewritten (atomically) only after a record's files
are in place. A killed run therefore leaves at worst temporary files, which ``resume=True`` deletes, and
records missing from the manifest, which it scores again. A write that fails (a full disk, a quota) ends
the run with one error naming the file and the directory; what was finished stays. Resuming checks the
manifest's own checksum, the settings (model and adapter weight fingerprints, k, W, scope, dtype,
formats) and the FASTA's identity: a difference is an error naming it, never a mix of two settings or two
inputs in one directory. The summary figures of finished records are recomputed from their checksummed
output files, never copied from the manifest. Chunk size and device are recorded but not compared (they
change no score beyond float rounding). No output is ever written over an input (the FASTA, its copy in the
cache, their indexes; for `score_variants` also the variant file and its index), with or without
``overwrite``.

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

Data parallel (`focus_nemo.scoring.dataparallel`): ``workers=N`` (``--workers``: processes on one machine,
each with its own model built by ``model_factory``) or a torchrun world of several groups of
tensor-parallel ranks (1 for a single-device model) scores the records side by side, assigned longest
first to the least-loaded group; each group streams its records as one process does, so the files are
byte-identical to a single process's. A record's files are written by its group's first rank; the
manifest and summary by one process (the coordinator of the workers, global rank 0), from the groups'
reports, through `records.RunBook`; the others are refused (`outputs.forbid_run_files`). A worker that dies
stops the run with an error naming it and its record (``failed``); the other records in progress become
``pending``. ``split_records=SIZE`` (``--split-records``, off by default) also cuts records longer than SIZE
into segments scored side by side, each after the first from ``split_overlap`` warm-up bases before its
start, and assembled by the coordinator into the same record files (`focus_nemo.scoring.segments`; the
scores differ from an unsplit stream's unless the warm-up reaches the record's start).

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

Modules: ``stream`` (the log-likelihood stream), ``model`` (loading, fingerprints), ``outputs`` (writers,
manifest, lock), ``tally`` (a record's figures and the bits-per-base check), ``fasta`` (`score_fasta`),
``variants`` (`score_variants`), ``parallel`` (ranks and groups), ``dataparallel`` (workers and groups). This
package re-exports their public names.
"""

from focus_nemo.scoring.fasta import DEFAULT_READ, run_report, score_fasta
from focus_nemo.scoring.model import (
    add_model_arguments,
    load_scoring_model,
    model_settings,
    scoring_ratio,
    tensor_fingerprint,
    untrained_focus_config,
)
from focus_nemo.scoring.outputs import (
    FORMATS,
    MANIFEST,
    SUMMARY,
    SUMMARY_COLUMNS,
    load_scores,
    parse_formats,
    read_tsv,
    safe_stem,
)
from focus_nemo.scoring.records import ScoreRun, ScoringInterrupted
from focus_nemo.scoring.stream import (
    DEFAULT_CHUNK,
    SCORE_DEFINITION,
    UNITS,
    LoglikStream,
    ScoringError,
    sequence_loglik,
)
from focus_nemo.scoring.variants import (
    UNSUPPORTED_KINDS,
    VARIANT_COLUMNS,
    Variant,
    VariantScore,
    read_variants,
    score_variant,
    score_variants,
    variant_counts_line,
    variant_windows,
)

__all__ = [
    "DEFAULT_CHUNK", "DEFAULT_READ", "FORMATS", "MANIFEST", "SUMMARY", "LoglikStream", "SCORE_DEFINITION",
    "SUMMARY_COLUMNS", "ScoreRun", "ScoringError", "ScoringInterrupted", "UNITS", "UNSUPPORTED_KINDS",
    "VARIANT_COLUMNS", "Variant",
    "VariantScore", "add_model_arguments", "load_scores", "load_scoring_model", "model_settings", "parse_formats",
    "read_tsv", "read_variants", "run_report", "safe_stem", "score_fasta", "score_variant", "score_variants",
    "scoring_ratio", "sequence_loglik", "tensor_fingerprint", "untrained_focus_config", "variant_counts_line",
    "variant_windows",
]

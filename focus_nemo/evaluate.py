"""Fidelity of FOCUS to the base model with full context.

At every scored position each model gives a next-base distribution. Distances are taken over the
four bases (the model's probabilities of A, C, G, T renormalised to sum to one), from the base model
with full context (p) to the model under test (q): |delta p(true base)| (the per-nucleotide
probability shift), L1, L2, Hellinger, Jensen-Shannon (nats) and KL(p || q) (nats). Bits per base
use the model's full-vocabulary likelihood of the true base. Positions whose target is not A/C/G/T
(either case) are not scored, and neither is the first window, where FOCUS and every baseline equal
the base model by construction (DESIGN I1).

Methods compared against ``full`` (the frozen base model reading the whole sequence):

* ``focus``: the FOCUS model at ratio k and window W (one-pass forward, equal to streaming).
* ``truncation``: attention sees only the current window of W bases (no Focus memory); the same
  for every k.
* ``sliding``: the base model with sliding-window attention whose span equals the FOCUS attention
  budget for the sequence: ``S = W + ceil(W/k) * J`` with ``J = (L - 1) // W`` the number of windows
  completed before the window of the last base (L = input bases). S is the most key/value entries
  per attention block FOCUS holds while reading the last window (the Focus memory of J windows plus
  one window of bases). Query t attends to keys t - S + 1 .. t.

In every method the Hyena blocks read the whole sequence; only attention is restricted. Summaries
are over sequences: mean, median, sample standard deviation and the 95% confidence interval of the
mean, ``mean +- t(0.975, n - 1) * std / sqrt(n)`` (Student t).

Recall (``recall.enabled``): the repeat-copy probe of `focus_nemo.evaluation.recall` for full context and every
method above on the same trials, as copy advantage and the fraction of full context's retained
(`focus_nemo.evaluation.recall_run`).

`evaluate(cfg)` is what ``recipes/evaluate_focus.py`` calls; `fidelity` is the compact held-out check
used during training. The pieces live in `focus_nemo.evaluation`: ``metrics``, ``statistics``, ``config``,
``sequences`` (sampling and one sequence), ``report`` (summaries, CSV, markdown), ``plots`` and ``run``.
"""

from focus_nemo.evaluation.config import EvalConfig, RecallSection, SourceSection, config_from_hydra, source_name
from focus_nemo.evaluation.metrics import (
    ACGT,
    LABELS,
    METHODS,
    METRICS,
    SEGMENT_END_METRICS,
    SEQUENCE_COLUMNS,
    SUMMARY_METRICS,
    acgt_probs,
    bits_per_base,
    distribution_metrics,
    fidelity,
    scored_positions,
    segment_end_metrics,
    true_base_index,
)
from focus_nemo.evaluation.report import (
    PAIRED_METRICS,
    paired_differences,
    paired_markdown,
    summarize,
    summary_markdown,
    write_csv,
)
from focus_nemo.evaluation.run import evaluate
from focus_nemo.evaluation.sequences import (
    PROFILE_METRICS,
    EvalSequence,
    Profile,
    attention_budget,
    evaluate_sequence,
    sample_sequences,
    sliding_span,
)
from focus_nemo.evaluation.statistics import summary_stats, t_quantile

__all__ = ["ACGT", "LABELS", "METHODS", "METRICS", "PAIRED_METRICS", "PROFILE_METRICS", "SEGMENT_END_METRICS",
           "SEQUENCE_COLUMNS", "SUMMARY_METRICS",
           "EvalConfig", "EvalSequence", "RecallSection", "Profile", "SourceSection", "acgt_probs",
           "attention_budget", "bits_per_base", "config_from_hydra", "distribution_metrics", "evaluate",
           "evaluate_sequence", "fidelity", "paired_differences", "paired_markdown", "sample_sequences",
           "scored_positions", "segment_end_metrics", "sliding_span", "source_name", "summarize",
           "summary_markdown", "summary_stats", "t_quantile", "true_base_index", "write_csv"]

"""Score every base of a FASTA file with FOCUS: whole chromosomes streamed with bounded memory.

Usage:
    python recipes/score_fasta.py --fasta hg38.fa.gz --records chr20 chr21 --out scores/ --format both [--resume]
    python recipes/score_fasta.py --fasta x.fa --checkpoint random:tiny --adapter none --k 4 --window 16 --out s/
    torchrun --standalone --nproc_per_node 2 recipes/score_fasta.py --fasta hg38.fa.gz --checkpoint evo2_7b/ \
        --adapter adapter/ --out scores/ --tensor-parallel 2
    python recipes/score_fasta.py --fasta genome.fa.gz --out scores/ --workers 4 --threads 16 [--resume]
    torchrun --nproc_per_node 8 recipes/score_fasta.py --fasta hg38.fa.gz --checkpoint evo2_7b/ \
        --adapter adapter/ --out scores/ --tensor-parallel 2 --resume      # 4 groups of 2 GPUs

Writes <record>.npz and/or <record>.bedgraph.gz (log p(base | preceding bases), nats), summary.tsv (every
record: scored, pending or failed; flagged above --max-bits-per-base) and manifest.json (complete or not) into
--out (focus_nemo.scoring); a run that scores nothing fails unless --allow-empty. --tensor-parallel N (NeMo
extra, torchrun) splits the model over N ranks (focus_nemo.nemo.scoring).

Data parallel (focus_nemo.scoring.dataparallel): records are spread over groups, longest first, each group
streaming its records as one process does (byte-identical files); one output directory whose manifest and
summary one process writes. --workers N: N processes on this machine, each with its own model, sharing
--threads (total; split evenly, at least one each); this process coordinates and holds no model. Under
torchrun the world splits into groups of --tensor-parallel N ranks (1 without the option: a single-device
model per rank, on its own GPU or the CPU); global rank 0 writes the manifest and summary, each group's
first rank its records.
"""

import contextlib
import functools
import os

from focus_nemo import cli
from focus_nemo.scoring import add_model_arguments, load_scoring_model, parallel, run_report, score_fasta


def main(argv=None) -> None:
    p = cli.parser(__doc__)
    p.add_argument("--fasta", required=True, help="FASTA file (plain, gzip or bgzip), directory or glob")
    p.add_argument("--out", required=True, help="output directory (must be new or empty unless --resume)")
    p.add_argument("--records", nargs="+", help="records to score (chr1 and 1 name the same record); default all")
    add_model_arguments(p)
    cli.add_device_argument(p, "cpu, cuda, cuda:N (default: cuda if available; with --tensor-parallel: rank's GPU)")
    p.add_argument("--tensor-parallel", type=int, metavar="N", help="split the model over N processes (torchrun)")
    p.add_argument("--workers", type=cli.at_least(1), default=1, metavar="N",
                   help="score records in N processes on this machine (data parallel; --threads is their total)")
    p.add_argument("--format", default="npz", choices=["npz", "bedgraph", "both"])
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--allow-empty", action="store_true", help="exit 0 even when no base at all is scored")
    p.add_argument("--max-bits-per-base", type=cli.positive_number, default=2.0, help="flag records above it")
    a = p.parse_args(argv)
    cli.set_threads(a.threads)
    model = (a.checkpoint, cli.adapter_argument(a.adapter), a.k, a.window, a.dtype)
    distributed = a.tensor_parallel is not None or int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", "0")) if distributed else 0

    def command():
        factory = None
        with contextlib.ExitStack() as stack:
            if a.workers > 1 and distributed:
                raise ValueError("--workers: not under torchrun, whose processes are the workers already")
            if a.tensor_parallel is None:
                device = cli.default_device(a.device)
                if distributed:  # torchrun, a single-device model per rank: data parallel only
                    device = parallel.init_data_parallel(a.device)
                    stack.callback(parallel.teardown_data_parallel)
                if a.workers > 1:  # each worker builds the model; this process coordinates
                    factory = functools.partial(load_scoring_model, *model, device, config=a.config,
                                                horizon=a.horizon)
                    fm, k, window = None, a.k, a.window
                else:
                    fm, k, window = load_scoring_model(*model, device, config=a.config, horizon=a.horizon)
            else:
                from focus_nemo.nemo.scoring import tp_scoring_model

                fm, k, window = stack.enter_context(tp_scoring_model(a.tensor_parallel, a.device, a.config, *model,
                                                                     horizon=a.horizon))
            return score_fasta(a.fasta, a.out, fm, records=a.records, k=k, window=window, formats=a.format,
                               chunk_size=a.chunk_size, resume=a.resume, progress=not a.no_progress and rank == 0,
                               info={"fasta": a.fasta, "checkpoint": a.checkpoint, "adapter": a.adapter},
                               allow_empty=a.allow_empty, max_bits_per_base=a.max_bits_per_base,
                               workers=a.workers, model_factory=factory, threads=a.threads)

    run = cli.run(command, errors=(ValueError, FileNotFoundError), quiet=rank != 0)
    if rank == 0:
        print("\n".join(run_report(run)))


if __name__ == "__main__":
    main()

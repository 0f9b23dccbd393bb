"""Score every base of a FASTA file with FOCUS: whole chromosomes streamed with bounded memory.

Usage:
    python recipes/score_fasta.py --fasta hg38.fa.gz --records chr20 chr21 --out scores/ --format both [--resume]
    python recipes/score_fasta.py --fasta x.fa --checkpoint random:tiny --adapter none --k 4 --window 16 --out s/
    python recipes/score_fasta.py --fasta genome.fa.gz --out scores/ --workers 4 --threads 16 [--resume]
    torchrun --nproc_per_node 8 recipes/score_fasta.py --fasta hg38.fa.gz --checkpoint evo2_7b/ \
        --adapter adapter/ --out scores/ --tensor-parallel 2 --resume      # 4 groups of 2 GPUs

Writes <record>.npz and/or <record>.bedgraph.gz (log p(base | preceding bases), nats), summary.tsv (every
record: scored, pending or failed; flagged above --max-bits-per-base) and manifest.json (complete or not) into
--out (focus_nemo.scoring); a run that scores nothing fails unless --allow-empty. --tensor-parallel N (NeMo
extra, torchrun) splits the model over N ranks; --workers N: N processes here sharing --threads (total);
under torchrun, groups of --tensor-parallel N ranks (focus_nemo.scoring.dataparallel).
"""

import contextlib
import os

from focus_nemo import cli
from focus_nemo.scoring import run_report, score_fasta
from focus_nemo.scoring.dataparallel import single_device_model
from focus_nemo.scoring.fasta import add_score_fasta_arguments


def main(argv=None) -> None:
    p = cli.parser(__doc__)
    add_score_fasta_arguments(p)
    a = p.parse_args(argv)
    cli.set_threads(a.threads)
    model = (a.checkpoint, cli.adapter_argument(a.adapter), a.k, a.window, a.dtype)
    distributed = a.tensor_parallel is not None or int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", "0")) if distributed else 0

    def command():
        with contextlib.ExitStack() as stack:
            if a.tensor_parallel is None:
                fm, k, window, factory = single_device_model(stack, model, a.device, a.config, a.horizon, a.workers,
                                                             distributed)
            else:
                from focus_nemo.nemo.scoring import tp_scoring_model

                factory = None
                fm, k, window = stack.enter_context(tp_scoring_model(a.tensor_parallel, a.device, a.config, *model,
                                                                     horizon=a.horizon))
            return score_fasta(a.fasta, a.out, fm, records=a.records, k=k, window=window, formats=a.format,
                               chunk_size=a.chunk_size, resume=a.resume, progress=not a.no_progress and rank == 0,
                               info={"fasta": a.fasta, "checkpoint": a.checkpoint, "adapter": a.adapter},
                               allow_empty=a.allow_empty, max_bits_per_base=a.max_bits_per_base,
                               workers=a.workers, model_factory=factory, threads=a.threads,
                               split_records=a.split_records, split_overlap=a.split_overlap)

    run = cli.run(command, errors=(ValueError, FileNotFoundError), quiet=rank != 0)
    if rank == 0:
        print("\n".join(run_report(run)))


if __name__ == "__main__":
    main()

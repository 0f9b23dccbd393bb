"""Data-parallel FASTA scoring: the records of one run spread over groups of processes, one output directory.

Two ways to get the groups, one set of rules:

* ``workers`` (`score_with_workers`, ``--workers N``): N processes on this machine (started with
  ``spawn``), each with its own copy of the model built by a picklable ``model_factory``. The process that
  calls `score_fasta` only coordinates (the recipe gives it no model): the workers start at once and
  report their model's settings, which must agree; it then opens and locks the directory with them,
  sends each worker its records, writes ``manifest.json`` and ``summary.tsv`` and waits for the workers'
  reports over one pipe per worker. Each worker runs ``threads // N`` CPU threads (at least one).
* ``torchrun`` (`score_in_groups`): the world splits into groups of ``tp`` ranks (`parallel.Layout`;
  ``tp`` = 1 for a single-device model, the tensor-parallel size of a NeMo model otherwise). Global rank 0
  coordinates as well as scoring its group's records; the other groups' first ranks report to it over a
  gloo channel whose operations wait as long as a record takes.

Records to score are assigned longest first, each to the group with the fewest bases so far (`assign`), and
every group streams its records one after another exactly as a single process does (same reads, same model
calls), so every record's files are byte-identical to a single-process run's. One writer per file: a record's
files are written (under a temporary name, then renamed) by its group's first rank alone; the manifest and
the summary by the coordinator alone (`records.RunBook`; workers and other ranks call
`outputs.forbid_run_files`), from what the groups report: each finished record's manifest entry (files with
their SHA-256, figures), or why it stopped. ``--resume`` is the single-process resume: the coordinator
decides what is finished from the manifest and the checksummed files.

A worker that dies (``kill -9``, out of memory) stops the job: the coordinator marks the record it was
scoring ``failed`` (naming the worker and the signal), stops the other workers (their records in progress
become ``pending``; records they finish meanwhile are kept), leaves ``complete: false`` and raises an error
naming the record; the dead worker's temporary files are removed. A worker stopped by a signal of its own
stops the run the same way, its record ``pending``. SIGTERM or SIGINT to the coordinator stops every worker
(records in progress ``pending``, "interrupted after ... bases"). Under torchrun a rank whose record fails
reports it before it exits; ``torchrun`` then stops the others, and rank 0 records the records in progress
as pending and names the failed one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

import torch

from focus_nemo.scoring import parallel, segments
from focus_nemo.scoring.model import model_settings
from focus_nemo.scoring.outputs import SUMMARY, forbid_run_files, progress_bar, settings_diff
from focus_nemo.scoring.records import (
    Job,
    RunBook,
    ScoreRun,
    ScoringInterrupted,
    check_something_scored,
    open_book,
    score_record,
    signals_raise,
    stop_reason,
)
from focus_nemo.scoring.stream import ScoringError

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 2.0  # a worker reports progress at most this often (and at each record's end)
STOP_GRACE_S = 60.0  # time stopped workers get to record where they were before they are killed
MESSAGE_BYTES = 1 << 16  # size of a report sent over the torchrun channel


class WorkerFailed(ScoringError):
    """A worker or rank died, or its record failed: the job stops (the directory says what is finished)."""


def assign(lengths: dict[str, int], groups: int) -> list[list[str]]:
    """Records (name: length, in input order) for `groups` groups: longest first, each to the group with the
    fewest bases so far (the lowest index on a tie; equal lengths keep the input order). Each group's list
    is in the order it scores them (longest first)."""
    if groups < 1:
        raise ValueError(f"groups: must be >= 1, got {groups}")
    loads, plan = [0] * groups, [[] for _ in range(groups)]
    for name in sorted(lengths, key=lambda n: -lengths[n]):  # stable: ties in input order
        g = min(range(groups), key=lambda i: (loads[i], i))
        plan[g].append(name)
        loads[g] += lengths[name]
    return plan


def score_records(job: Job, fm, names: Sequence[str], send: Callable[[tuple], None]) -> None:
    """Score `names` (records or `segments.Segment`s) one after another into their files (a group's first
    rank, or a worker), reporting to the coordinator through `send`: ``("start", record)``, ``("progress",
    bases)``, ``("done", item, entry)``, ``("stopped", record, why)`` (then the error is raised again) and
    ``("end",)`` after the last one."""
    for item in names:
        name = segments.name_of(item)
        send(("start", name))
        done, unsent, last = [0], [0], [time.monotonic()]

        def advance(n: int, done=done, unsent=unsent, last=last) -> None:
            done[0] += n
            unsent[0] += n
            if time.monotonic() - last[0] >= PROGRESS_EVERY_S:
                send(("progress", unsent[0]))
                unsent[0], last[0] = 0, time.monotonic()

        try:
            entry = segments.score_segment(job, fm, item, advance) if isinstance(item, segments.Segment) else \
                score_record(job.genome, name, job.out, fm, job.k, job.window, job.formats, job.chunk_size,
                             job.read_size, advance, job.max_bits)
        except BaseException as e:
            with contextlib.suppress(Exception):
                send(("stopped", name, stop_reason(e, done[0], segments.length_of(job.genome, item))))
            raise
        send(("done", item, entry))
    send(("end",))


def stream_records(job: Job, fm, names: Sequence[str]) -> None:
    """The model calls of `score_records` without any file (the other ranks of a tensor-parallel group)."""
    for item in names:
        segments.stream_item(job, fm, item)


class Collector:
    """The coordinator's view of the groups: enters their reports in the `RunBook` and the progress bar, and
    knows which record each group is scoring (thread-safe)."""

    def __init__(self, book: RunBook, genome, run: ScoreRun, bar, total: int, label: str) -> None:
        self.book, self.genome, self.run, self.bar, self.label = book, genome, run, bar, label
        self.task = bar.add_task("scoring", total=total)
        self.current: dict[int, list] = {}  # group -> [record, bases reported]
        self.ended: set[int] = set()
        self.failures: list[str] = []  # records that failed or errors outside a record, in words
        self.interrupted: list[str] = []  # records a group stopped on a signal of its own, in words
        self.lock = threading.RLock()

    def handle(self, group: int, msg: tuple) -> None:
        with self.lock:
            kind = msg[0]
            if kind == "start":
                self.current[group] = [msg[1], 0]
                self.bar.update(self.task, description=", ".join(c[0] for c in self.current.values() if c))
            elif kind == "progress":
                if self.current.get(group):
                    self.current[group][1] += msg[1]
                self.bar.advance(self.task, msg[1])
            elif kind == "done":
                item, entry = msg[1], msg[2]
                seen = self.current.get(group)[1] if self.current.get(group) else 0
                self.bar.advance(self.task, segments.length_of(self.genome, item) - seen)
                self.current[group] = None
                segments.finish(self.book, self.run, item, entry)
            elif kind == "stopped":
                name, why = msg[1], msg[2]
                self.book.stopped(name, why)
                self.current[group] = None
                if why["status"] == "failed":
                    self.failures.append(f"record {name!r} failed on {self.label} {group}: {why['note']}")
                else:
                    self.interrupted.append(f"{self.label} {group} was stopped by a signal while scoring record "
                                            f"{name!r} ({why['note']})")
            elif kind == "error":
                self.failures.append(f"{self.label} {group} could not start: {msg[1]}")
            elif kind == "end":
                self.ended.add(group)
            else:
                raise ValueError(f"unknown report {kind!r} from {self.label} {group}")

    def in_flight(self) -> dict[int, str]:
        with self.lock:
            return {g: c[0] for g, c in self.current.items() if c}

    def interrupt_all(self, note: str) -> None:
        """Record every record still in progress as pending (`note` says why)."""
        for group, name in self.in_flight().items():
            self.book.stopped(name, {"status": "pending", "note": f"{note} (on {self.label} {group})"})
            self.current[group] = None


# --------------------------------------------------------------------------- workers (processes, one machine)
def worker_threads(threads: int | None, workers: int) -> int:
    """CPU threads of each of `workers` workers: `threads` (None: torch's default here) split evenly, at
    least one each."""
    total = threads or torch.get_num_threads()
    return max(1, total // workers)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def _worker_main(index: int, conn, job: Job, factory, settings: dict | None, threads: int, level: int) -> None:
    """A worker process: build the model, report its settings (checked against the coordinator's when it has
    them), then score the records the coordinator sends (``("records", names)``)."""
    logging.basicConfig(level=logging.WARNING, format=f"%(levelname)s %(name)s [worker {index}]: %(message)s")
    logging.getLogger("focus_nemo").setLevel(max(level, logging.WARNING))
    forbid_run_files(f"worker {index} scores records; the coordinator writes the run's manifest and summary")
    torch.set_num_threads(threads)
    code = 0
    try:
        with signals_raise(True):
            try:
                made = factory()
                fm, k, window = made if isinstance(made, tuple) else (made, None, None)
                job.k = job.k if job.k is not None else k if k is not None else fm.config.k
                job.window = job.window if job.window is not None else window if window is not None \
                    else fm.config.window
                ours = {**model_settings(fm, job.k, job.window), "formats": list(job.formats)}
                diff = settings_diff(settings, ours) if settings is not None else []
                if diff:
                    raise ScoringError(f"the worker's model is not the coordinator's ({'; '.join(diff)})")
                if isinstance(job.genome, (str, os.PathLike)):
                    from focus_nemo.data import open_genome

                    job.genome = open_genome(job.genome)
            except ScoringInterrupted:
                raise
            except Exception as e:  # noqa: BLE001 - reported to the coordinator, which raises it
                conn.send(("error", f"{type(e).__name__}: {e}"))
                raise
            conn.send(("ready", ours, str(next(fm.parameters()).device)))
            order = conn.recv()
            if order[0] == "records":
                score_records(job, fm, order[1], conn.send)
    except ScoringInterrupted:
        code = 3
    except (EOFError, OSError):  # the coordinator is gone
        code = 2
    except BaseException:  # noqa: BLE001 - reported to the coordinator
        code = 1
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    sys.exit(code)


class _Workers:
    """The worker processes of a run and the coordinator's end of their pipes. They start at once (each builds
    its model while the coordinator prepares the directory) and get their records once the directory is
    open (`start`)."""

    def __init__(self, n: int, job: Job, source, factory, settings: dict | None, threads: int) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # a fresh interpreter: no inherited OpenMP pools, locks or CUDA state
        self.procs, self.conns = {}, {}
        worker_job = Job(source, job.out, job.k, job.window, job.formats, job.chunk_size, job.read_size,
                         job.max_bits)
        level = logging.getLogger("focus_nemo").getEffectiveLevel()
        for i in range(n):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, name=f"score-worker-{i}", daemon=True,
                               args=(i, theirs, worker_job, factory, settings, threads, level))
            self.procs[i], self.conns[i] = proc, ours
            proc.start()
            theirs.close()
        self.pids = {i: p.pid for i, p in self.procs.items()}

    def _messages(self, i: int):
        conn = self.conns[i]
        while True:
            try:
                if not conn.poll():
                    return
                msg = conn.recv()
            except (EOFError, OSError):
                return
            yield msg

    def ready(self, out) -> list[tuple[dict, str]]:
        """(settings, device) of every worker once each has built its model; a worker that could not, or
        died, raises WorkerFailed."""
        from multiprocessing.connection import wait

        got: dict[int, tuple[dict, str]] = {}
        while len(got) < len(self.procs):
            left = [i for i in self.procs if i not in got]
            wait([self.conns[i] for i in left] + [self.procs[i].sentinel for i in left], timeout=1.0)
            for i in left:
                for msg in self._messages(i):
                    if msg[0] == "error":
                        raise WorkerFailed(f"worker {i} could not start: {msg[1]}")
                    got[i] = (msg[1], msg[2])
                if i not in got and not self.procs[i].is_alive():
                    self.procs[i].join()
                    raise WorkerFailed(f"worker {i} (pid {self.procs[i].pid}) died "
                                       f"({_exit_text(self.procs[i].exitcode)}) while starting; nothing in {out} "
                                       f"was scored by it")
        return [got[i] for i in sorted(got)]

    def start(self, plan: list[list[str]]) -> None:
        for i, names in enumerate(plan):
            self.conns[i].send(("records", names))

    def run(self, collector: Collector, out) -> None:
        """Enter every report until each worker has ended; a failure or a dead worker raises WorkerFailed."""
        from multiprocessing.connection import wait

        live = set(self.procs)
        while live:
            wait([self.conns[i] for i in live] + [self.procs[i].sentinel for i in live], timeout=1.0)
            for i in sorted(live):
                for msg in self._messages(i):
                    collector.handle(i, msg)
                if collector.failures:
                    raise WorkerFailed(f"{collector.failures[0]}; {out} is incomplete ({SUMMARY} lists what is "
                                       f"finished): fix the cause, then rerun with --resume")
                if collector.interrupted:
                    raise ScoringInterrupted(f"{collector.interrupted[0]}; the run is incomplete ({SUMMARY} lists "
                                             f"the pending records): rerun with --resume to finish it")
                if i in collector.ended:
                    self.procs[i].join()
                    live.discard(i)
                elif not self.procs[i].is_alive():
                    for msg in self._messages(i):
                        collector.handle(i, msg)
                    if i in collector.ended:
                        live.discard(i)
                        continue
                    self._died(i, collector, out)

    def _died(self, i: int, collector: Collector, out) -> None:
        proc = self.procs[i]
        proc.join()
        how = f"worker {i} (pid {proc.pid}) died ({_exit_text(proc.exitcode)})"
        _remove_temp_files(out, proc.pid)
        name = collector.in_flight().get(i)
        if name is None:
            raise WorkerFailed(f"{how} between records; {out} is incomplete ({SUMMARY} lists what is finished): "
                               f"rerun with --resume")
        collector.book.stopped(name, {"status": "failed", "note": f"{how} while scoring it"})
        collector.current[i] = None
        raise WorkerFailed(f"{how} while scoring record {name!r}; {out} is incomplete ({SUMMARY} lists what is "
                           f"finished): rerun with --resume")

    def stop(self, collector: Collector | None, why: str) -> None:
        """Stop every live worker (SIGTERM: it records where it was), keep what they report meanwhile, kill
        those still alive after `STOP_GRACE_S`; records still in progress become pending."""
        from multiprocessing.connection import wait

        for proc in self.procs.values():
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        live = {i for i, p in self.procs.items() if p.is_alive()}
        while live and time.monotonic() < deadline:
            wait([self.conns[i] for i in live] + [self.procs[i].sentinel for i in live], timeout=0.5)
            for i in sorted(live):
                with contextlib.suppress(Exception):
                    for msg in self._messages(i):
                        if collector is not None:
                            collector.handle(i, msg)
                if not self.procs[i].is_alive():
                    with contextlib.suppress(Exception):
                        for msg in self._messages(i):
                            if collector is not None:
                                collector.handle(i, msg)
                    live.discard(i)
        for proc in self.procs.values():
            if proc.is_alive():
                proc.kill()
            proc.join()
        if collector is not None:
            collector.interrupt_all(f"not finished: {why}")


def _remove_temp_files(out, pid: int) -> None:
    """Delete the temporary files a dead worker `pid` of this machine left in `out` (`durable.temp_beside`)."""
    from pathlib import Path

    from focus_nemo.durable import writer_tag
    from focus_nemo.scoring.outputs import TEMP_FILE

    tag = "." + writer_tag().replace(f"{os.getpid()}@", f"{pid}@", 1) + "."
    for p in Path(out).iterdir():
        if TEMP_FILE.match(p.name) and tag in p.name:
            with contextlib.suppress(OSError):
                p.unlink()


@contextlib.contextmanager
def _signals_ignored():
    """SIGTERM and SIGINT ignored (main thread only) while the coordinator stops its workers and records where
    they were."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def score_with_workers(job: Job, run: ScoreRun, opened: tuple, workers: int, factory, threads: int | None,
                       progress: bool) -> ScoreRun:
    """`score_fasta` with ``workers`` processes (see the module docstring); this process coordinates. The
    workers start first and build their models while nothing is written; the directory is opened with the
    settings they report (which must agree with each other, and with this process's model when it has one)."""
    settings, resume, names, requested, empty, info = opened
    each = worker_threads(threads, workers)
    try:
        pickle.dumps(factory)
    except Exception as e:  # noqa: BLE001 - any pickling failure
        raise ValueError(f"model_factory: must be picklable to reach the worker processes ({e})") from None
    n = max(1, min(workers, segments.max_items(job.genome, names, job.split)))
    info = {**info, "workers": n, "threads_per_worker": each}
    source = job.source if isinstance(job.source, (str, os.PathLike)) else job.genome
    if not resume and job.out.is_dir() and any(job.out.iterdir()):  # before any worker starts
        raise ScoringError(f"{job.out}: output directory exists and is not empty; pass resume=True (--resume) "
                           f"to continue a run there, or choose a new directory")
    pool = _Workers(n, job, source, factory, settings, each)
    collector = None
    with contextlib.ExitStack() as stack, progress_bar(progress) as bar:
        try:
            with signals_raise(True):
                ready = pool.ready(job.out)
            first = ready[0][0] if settings is None else settings
            for i, (theirs, _) in enumerate(ready):
                diff = settings_diff(first, theirs)
                if diff:
                    raise ScoringError(f"worker {i}'s model differs from worker 0's ({'; '.join(diff)})")
            info.setdefault("device", ready[0][1])
            book, todo = open_book(stack, job, run, first, resume, names, requested, empty, info)
            todo = segments.plan(book, job, todo, run)
            plan = assign({item: segments.length_of(job.genome, item) for item in todo}, n)
            collector = Collector(book, job.genome, run, bar, sum(segments.length_of(job.genome, x) for x in todo),
                                  "worker")
            logger.info("%s: %d record(s) over %d worker(s) (pids %s), %d thread(s) each", job.out, len(todo), n,
                        ", ".join(str(p) for p in pool.pids.values()), each)
            with signals_raise(True):
                pool.start(plan)
                pool.run(collector, job.out)
        except BaseException as e:
            with _signals_ignored():
                pool.stop(collector, f"the run stopped ({type(e).__name__}: {e})")
            raise
        run.summary = book.complete()
    return run


# --------------------------------------------------------------------------- torchrun groups
def _encode(msg: tuple) -> torch.Tensor:
    data = pickle.dumps(msg)
    if len(data) > MESSAGE_BYTES - 8:
        raise ScoringError(f"report of {len(data):,} bytes does not fit a {MESSAGE_BYTES:,}-byte message")
    buf = torch.zeros(MESSAGE_BYTES, dtype=torch.uint8)
    buf[:8] = torch.tensor(list(len(data).to_bytes(8, "little")), dtype=torch.uint8)
    buf[8: 8 + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return buf


def _decode(buf: torch.Tensor) -> tuple:
    raw = buf.numpy().tobytes()
    n = int.from_bytes(raw[:8], "little")
    return pickle.loads(raw[8: 8 + n])  # noqa: S301 - written by this job's own ranks


def score_in_groups(job: Job, run: ScoreRun, opened: tuple, fm, where: parallel.Layout, progress: bool,
                    allow_empty: bool) -> ScoreRun:
    """`score_fasta` on every rank of a torchrun world of `where.groups` groups (see the module docstring)."""
    dist = torch.distributed
    settings, resume, names, requested, empty, info = opened
    rank, world, groups = where.rank, where.world, where.groups
    chan = dist.new_group(backend="gloo", timeout=parallel.CHANNEL_TIMEOUT)
    info = {**info, "data_parallel": groups, **({"tensor_parallel": where.tp} if where.tp > 1 else {})}
    with contextlib.ExitStack() as stack:
        book = None
        if rank == 0:
            try:
                book, todo = open_book(stack, job, run, settings, resume, names, requested, empty, info)
                todo = segments.plan(book, job, todo, run)
                plan = ("ok", assign({x: segments.length_of(job.genome, x) for x in todo}, groups), run.skipped)
                total = sum(segments.length_of(job.genome, x) for x in todo)
            except Exception as e:
                parallel.from_rank0(("error", f"{type(e).__name__}: {e}"), world, chan)
                raise
            parallel.from_rank0(plan, world, chan)
        else:
            forbid_run_files(f"rank {rank} scores records; global rank 0 writes the run's manifest and summary")
            plan = parallel.from_rank0(None, world, chan)
            if plan[0] == "error":
                raise ScoringError(f"rank 0 could not start scoring: {plan[1]}")
            run.skipped = list(plan[2])
        mine = plan[1][where.group]
        if rank != 0:
            if where.leader:
                def send(msg: tuple) -> None:
                    dist.send(_encode(msg), dst=0, group=chan)

                score_records(job, fm, mine, send)
            else:
                stream_records(job, fm, mine)
            run.scored = list(dict.fromkeys(segments.name_of(x) for x in mine))
        else:
            _coordinate(job, run, book, fm, mine, where, chan, progress, total)
            run.summary = book.complete()
    check_something_scored(run, job.out, allow_empty, rank, world, chan)
    dist.destroy_process_group(chan)
    return run


def _coordinate(job: Job, run: ScoreRun, book: RunBook, fm, mine: list[str], where: parallel.Layout, chan,
                progress: bool, total: int) -> None:
    """Global rank 0: score its group's records and enter every group's reports (a listening thread)."""
    dist = torch.distributed
    with progress_bar(progress) as bar:
        collector = Collector(book, job.genome, run, bar, total, "group")
        errors: list[BaseException] = []

        def listen() -> None:
            try:
                while len(collector.ended - {0}) < where.groups - 1:
                    buf = torch.empty(MESSAGE_BYTES, dtype=torch.uint8)
                    src = dist.recv(buf, group=chan)
                    collector.handle(src // where.tp, _decode(buf))
            except BaseException as e:  # noqa: BLE001 - re-raised by the main thread
                errors.append(e)

        listener = threading.Thread(target=listen, name="score-reports", daemon=True)
        listener.start()
        try:
            with signals_raise(True):
                score_records(job, fm, mine, lambda msg: collector.handle(0, msg))
                while listener.is_alive():
                    listener.join(0.5)
                    if collector.failures:
                        break
            if errors:
                raise errors[0]
            if collector.failures:
                raise WorkerFailed(f"{collector.failures[0]}; {job.out} is incomplete ({SUMMARY} lists what is "
                                   f"finished): fix the cause, then rerun with --resume")
        except BaseException as e:
            failed = "; ".join(collector.failures)
            collector.interrupt_all(f"not finished: the run stopped ({type(e).__name__}: {e})")
            if failed and not isinstance(e, WorkerFailed):
                raise WorkerFailed(f"{failed}; {job.out} is incomplete ({SUMMARY} lists what is finished): "
                                   f"fix the cause, then rerun with --resume") from e
            raise


def single_device_model(stack: contextlib.ExitStack, model: tuple, device: str | None, config: str | None, horizon,
                        workers: int, distributed: bool) -> tuple:
    """The scoring model of a run whose groups are single processes: (fm, k, window, factory).

    One process: the model on `device` (`focus_nemo.cli.default_device`). Under torchrun without tensor
    parallelism: each rank's own model on its GPU (or the CPU), the process group torn down by `stack`.
    With ``workers > 1``: no model here (fm None) but a `factory` each worker calls to build its own.

    Args:
        model: (checkpoint, adapter, k, window, dtype) as `load_scoring_model` takes them.
    """
    import functools

    from focus_nemo.cli import default_device
    from focus_nemo.scoring.model import load_scoring_model

    if workers > 1 and distributed:
        raise ValueError("--workers: not under torchrun, whose processes are the workers already")
    where = default_device(device)
    if distributed:  # torchrun, a single-device model per rank: data parallel only
        where = parallel.init_data_parallel(device)
        stack.callback(parallel.teardown_data_parallel)
    if workers > 1:  # each worker builds the model; this process coordinates
        factory = functools.partial(load_scoring_model, *model, where, config=config, horizon=horizon)
        return None, model[2], model[3], factory
    fm, k, window = load_scoring_model(*model, where, config=config, horizon=horizon)
    return fm, k, window, None

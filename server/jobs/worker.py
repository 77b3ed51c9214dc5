"""Entry points of the processes that run a job's search and a model's export (spawned, never forked)."""

from __future__ import annotations

import importlib
import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autohas_edge.common.proc import exit_when_gone
from autohas_edge.server.errors import Cancelled

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerArgs:
    """What a job worker needs: plain values, so they pickle across the spawn."""

    job_id: str
    engine: str
    spec: dict[str, Any]
    dataset: str
    run_dir: str
    device: str
    parent_pid: int
    workers: int = 1  # search worker processes (torchrun ranks) on this machine
    rendezvous: dict[str, Any] | None = None  # a search over several machines (launcher.Rendezvous)
    threads: int = 0  # torch threads per search worker (0: this machine's cores shared among them)


def run_job(args: WorkerArgs, messages: Any, stop: Any) -> None:
    """Run one job; send ("progress", dict) while it runs, then ("done", result) / ("cancelled", None) /
    ("failed", message) on the `messages` queue. `stop` is an Event the server sets to cancel."""
    from autohas_edge.server.search import prepare_environment

    prepare_environment()  # before the engine imports torch
    exit_when_gone(args.parent_pid)
    Path(args.run_dir).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=Path(args.run_dir).parent / "worker.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    engine = importlib.import_module(args.engine)
    # engines that cannot span machines (or pin threads) need not take these
    extra = {"rendezvous": args.rendezvous, "threads": args.threads} if args.rendezvous else {}
    try:
        result = engine.run_job(
            args.spec,
            args.dataset,
            args.run_dir,
            args.device,
            on_progress=lambda p: messages.put(("progress", p)),
            should_stop=stop.is_set,
            workers=args.workers,
            **extra,
        )
    except Cancelled:
        messages.put(("cancelled", None))
    except BaseException as e:  # the server records the job as failed instead of losing the reason
        log.error("job %s failed:\n%s", args.job_id, traceback.format_exc())
        messages.put(("failed", f"{type(e).__name__}: {e}"))
    else:
        messages.put(("done", result))
    messages.close()
    messages.join_thread()  # flush before exit, so the server reads the final message


def export_model(engine: str, run_dir: str, out_dir: str, formats: list[str]) -> None:
    """Export a run to a bundle directory (runs in the export worker process)."""
    from autohas_edge.export.quiet import native_log

    # the converters' and runtimes' C++ lines go beside the job's worker.log, not the server's log
    with native_log(Path(run_dir).parent / "native.log"):
        importlib.import_module(engine).export_bundle(run_dir, out_dir, formats)

"""`autohas tasks|jobs|models|audit ...`: the operator's command line over the OperatorService.

The token comes from `$AUTOHAS_OPERATOR_TOKEN` or `--token-file` (never from the command line, where
other users of the machine could read it in the process list).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOKEN_ENV = "AUTOHAS_OPERATOR_TOKEN"
DEFAULT_ADDRESS = "127.0.0.1:50051"


class _Exit(Exception):
    """Ends the command with an exit code and a one-line message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Command:
    """A subcommand group: its options and how it runs (what `autohas_edge.server.cli` dispatches)."""

    name: str
    add_actions: Callable[[Any], None]
    flat: bool = False  # one action: its options on the command itself

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Connection options, then one sub-parser per action."""
        _connection_options(parser)
        if self.flat:
            self.add_actions(parser)
            return
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        self.add_actions(actions)
        for action_parser in actions.choices.values():  # defaults shown in each action's help
            action_parser.formatter_class = parser.formatter_class

    def run(self, args: argparse.Namespace) -> int:
        """Run the chosen action; 0 ok, 1 a failed job or export, 2 bad input or a refused call."""
        from autohas_edge.server.operator_client import OperatorClient

        try:
            token = _token(args.token_file)
            with OperatorClient(
                args.address, token, tls=args.tls, root_cert=args.tls_root_cert
            ) as client:
                return int(args.func(client, args) or 0)
        except _Exit as exc:
            print(f"autohas {self.name}: {exc}", file=sys.stderr)
            return exc.code
        except (OSError, ValueError) as exc:
            print(f"autohas {self.name}: error: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # grpc.RpcError: the status and its message, one line
            code = getattr(exc, "code", None)
            if code is None:
                raise
            print(f"autohas {self.name}: {code().name}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
            return 2


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help="the server's host:port")
    security = parser.add_mutually_exclusive_group()
    security.add_argument(
        "--tls",
        action="store_const",
        const=True,
        default=None,
        help="TLS even on loopback (default: TLS unless the address is this machine)",
    )
    security.add_argument(
        "--plaintext",
        dest="tls",
        action="store_const",
        const=False,
        help="no TLS, even to another machine (development only)",
    )
    parser.add_argument(
        "--tls-root-cert",
        type=Path,
        help="PEM of the CA that signed the server's certificate (implies TLS)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help=f"file holding the operator token (default: ${TOKEN_ENV}; a server without either "
        "keeps its generated token in DATA_DIR/operator_token)",
    )


def _token(path: Path | None) -> str:
    if path is not None:
        if not path.is_file():
            raise _Exit(2, f"error: --token-file {path} is not a file")
        token = path.read_text().strip()
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise _Exit(
            2, f"error: no operator token: set ${TOKEN_ENV} or pass --token-file (chmod 600)"
        )
    return token


def _print_job(job: Any) -> None:
    progress = job.progress
    line = (
        f"{job.job_id}  {job.spec.task_id}  {_state(job)}  "
        f"{progress.stage} {progress.step}/{progress.total_steps}"
    )
    if job.HasField("result"):
        line += f"  test accuracy {job.result.test_accuracy:.4f}, {job.result.params} parameters"
    if job.error:
        line += f"  error: {job.error}"
    print(line)


def _state(job: Any) -> str:
    from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb

    return str(pb.JobState.Name(job.state)).removeprefix("JOB_STATE_").lower()


# ---- tasks ----------------------------------------------------------------------------------


def _add_task_actions(actions: Any) -> None:
    create = actions.add_parser("create", help="declare a task devices can upload to")
    create.add_argument("task_id")
    create.add_argument("--app-id", action="append", required=True, help="repeat for each app")
    create.add_argument("--purpose", required=True, help="the consent purpose an upload needs")
    create.add_argument(
        "--input-shape", required=True, help="one example, channels first: 6, 3,100 or 1,28,28"
    )
    create.add_argument("--num-classes", type=int, required=True, help="classes 0..K-1")
    create.add_argument("--label-names", default="", help="comma-separated, one per class")
    create.add_argument(
        "--layout",
        default="",
        choices=("", "tabular", "signal", "image"),
        help="how input_shape reads (default: by its rank)",
    )
    create.add_argument("--dtype", default="float32", help="float32, float16, int8, uint8, ...")
    create.set_defaults(func=_create_task)
    listing = actions.add_parser("list", help="every task")
    listing.set_defaults(func=_list_tasks)


def _create_task(client: Any, args: argparse.Namespace) -> int:
    from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb

    try:
        shape = [int(d) for d in args.input_shape.split(",")]
        dtype: Any = pb.DType.Value("DTYPE_" + args.dtype.upper())
    except ValueError as exc:
        raise _Exit(2, f"error: --input-shape / --dtype: {exc}") from None
    task = pb.Task(
        task_id=args.task_id,
        app_ids=args.app_id,
        purpose=args.purpose,
        input_shape=shape,
        input_dtype=dtype,
        num_classes=args.num_classes,
        label_names=[n for n in args.label_names.split(",") if n],
        layout=args.layout,
    )
    created = client.create_task(task)
    print(f"created task {created.task_id}: input {list(created.input_shape)}")
    return 0


def _list_tasks(client: Any, args: argparse.Namespace) -> int:
    for t in client.list_tasks():
        layout = t.layout or "by rank"
        print(
            f"{t.task_id}  apps {','.join(t.app_ids)}  purpose {t.purpose}  input "
            f"{list(t.input_shape)} ({layout})  {t.num_classes} classes"
        )
    return 0


# ---- jobs -----------------------------------------------------------------------------------


def _add_job_actions(actions: Any) -> None:
    start = actions.add_parser("start", help="start a search over a task's consented data")
    start.add_argument("task_id")
    start.add_argument(
        "--mode", default="joint", choices=("joint", "nas", "hpo"), help="what is searched"
    )
    start.add_argument(
        "--strategy", default="", help="differentiable or reinforce (default: the server's)"
    )
    for name, kind in (
        ("steps", int),
        ("retrain-steps", int),
        ("max-params", int),
        ("max-flops", int),
        ("max-latency-ms", float),
        ("within-points", float),
        ("seed", int),
    ):
        start.add_argument(f"--{name}", type=kind, default=0, help="(default 0: the server's own)")
    start.add_argument("--watch", action="store_true", help="then watch it with a progress bar")
    start.set_defaults(func=_start_job)
    listing = actions.add_parser("list", help="jobs, newest last")
    listing.add_argument("--task-id", default="", help="one task's (default: all)")
    listing.set_defaults(func=_list_jobs)
    for name, func, text in (
        ("get", _get_job, "a job's state, progress and result"),
        ("watch", _watch_job, "a progress bar until the job ends (exit 1 unless it succeeds)"),
        ("cancel", _cancel_job, "stop a queued or running job"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("job_id")
        action.set_defaults(func=func)


def _list_jobs(client: Any, args: argparse.Namespace) -> int:
    for job in client.list_jobs(args.task_id):
        _print_job(job)
    return 0


def _start_job(client: Any, args: argparse.Namespace) -> int:
    job = client.start_job(
        args.task_id,
        mode=args.mode,
        strategy=args.strategy,
        steps=args.steps,
        retrain_steps=args.retrain_steps,
        max_params=args.max_params,
        max_flops=args.max_flops,
        max_latency_ms=args.max_latency_ms,
        within_points=args.within_points,
        seed=args.seed,
    )
    print(f"started job {job.job_id}")
    if args.watch:
        args.job_id = job.job_id
        return _watch_job(client, args)
    return 0


def _get_job(client: Any, args: argparse.Namespace) -> int:
    job = client.job(args.job_id)
    _print_job(job)
    for name, value in sorted(job.result.architecture.items()):
        print(f"  architecture {name} = {value}")
    for name, value in sorted(job.result.hyperparameters.items()):
        print(f"  hyper-parameter {name} = {value}")
    return 0


def _watch_job(client: Any, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    bar, stage = None, ""
    for p in client.watch(args.job_id):
        if p.stage != stage and p.total_steps:
            if bar is not None:
                bar.close()
            stage = p.stage
            bar = tqdm(total=p.total_steps, desc=f"{args.job_id} {stage}", file=sys.stderr)
        if bar is not None and p.stage == stage:
            bar.update(max(0, p.step - bar.n))
            bar.set_postfix(loss=f"{p.train_loss:.3f}", refresh=False)
    if bar is not None:
        bar.close()
    job = client.job(args.job_id)
    _print_job(job)
    return 0 if _state(job) == "succeeded" else 1


def _cancel_job(client: Any, args: argparse.Namespace) -> int:
    _print_job(client.cancel(args.job_id))
    return 0


# ---- models and audit -----------------------------------------------------------------------


def _add_model_actions(actions: Any) -> None:
    listing = actions.add_parser("list", help="a task's exported models")
    listing.add_argument("task_id")
    listing.set_defaults(func=_list_models)
    export = actions.add_parser("export", help="export finished jobs to verified bundles")
    export.add_argument("job_ids", nargs="+")
    export.add_argument(
        "--formats", default="onnx,tflite,onnx-int8,tflite-int8", help="comma-separated"
    )
    export.set_defaults(func=_export)
    download = actions.add_parser("download", help="a bundle's files, hash-checked")
    download.add_argument("--model-id", default="", help="default: the task's latest")
    download.add_argument("--task-id", default="")
    download.add_argument("--out", type=Path, required=True, help="folder for the bundle")
    download.set_defaults(func=_download)


def _list_models(client: Any, args: argparse.Namespace) -> int:
    for m in client.list_models(args.task_id):
        print(f"{m.model_id}  job {m.job_id}  formats {','.join(m.formats)}")
    return 0


def _export(client: Any, args: argparse.Namespace) -> int:
    response = client.export(args.job_ids, [f for f in args.formats.split(",") if f])
    for r in response.results:
        print(f"{r.job_id}  " + (f"model {r.model.model_id}" if r.ok else f"FAILED: {r.error}"))
    return 0 if all(r.ok for r in response.results) else 1


def _download(client: Any, args: argparse.Namespace) -> int:
    if not (args.model_id or args.task_id):
        raise _Exit(2, "error: pass --model-id or --task-id")
    if args.out.exists() and not args.out.is_dir():
        raise _Exit(2, f"error: --out {args.out} is a file, not a folder")
    manifest = client.manifest(args.model_id, args.task_id)
    files = client.download(manifest, args.out)
    print(f"model {manifest.model.model_id}: {len(files)} files -> {args.out}")
    return 0


def _add_audit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="the job whose consent audit to show")
    parser.set_defaults(func=_audit)


def _audit(client: Any, args: argparse.Namespace) -> int:
    audit = client.audit(args.job_id)
    print(f"job {audit.job_id}, task {audit.task_id}, purpose {audit.purpose}")
    for u in audit.users:
        print(f"  {u.app_id}  {u.user_id}  {u.examples} examples  consent {u.consent_text_version}")
    return 0


tasks = Command("tasks", _add_task_actions)
jobs = Command("jobs", _add_job_actions)
models = Command("models", _add_model_actions)
audit = Command("audit", _add_audit_options, flat=True)

"""`autohas search`: run a joint architecture + hyper-parameter search and write a run directory."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autohas_edge.server.search.config import DEVICES, MODES, STRATEGIES, SearchConfig
from autohas_edge.server.search.layout import LAYOUTS, SHAPE_RULES
from autohas_edge.server.search.progress import SearchCancelled

if TYPE_CHECKING:
    from tqdm import tqdm

#: command-line flag -> SearchConfig field (flags map one to one onto the config)
_FLAGS: dict[str, tuple[type, str]] = {
    "steps": (int, "search steps, warm-up included"),
    "retrain_steps": (int, "steps to retrain the derived model"),
    "max_params": (int, "parameter budget of the derived model"),
    "max_flops": (
        int,
        "FLOPs budget (multiply-accumulates of one inference) of the derived model (0: none)",
    ),
    "max_latency_ms": (
        float,
        "latency budget of the derived model, measured on ONNX Runtime (1 thread, batch 1) on "
        "this machine; a per-candidate table is measured once per space and cached (0: none)",
    ),
    "batch_size": (int, "batch size of the shared-weight updates and of retraining"),
    "encoding_batch_size": (int, "batch size of the encoding updates"),
    "warmup_fraction": (float, "fraction of steps that train only the shared weights"),
    "cost_weight": (float, "weight of the expected-parameter penalty"),
    "encoding_lr": (float, "learning rate of the encodings (Adam)"),
    "max_skips": (int, "cap on skipped blocks in the derived model"),
    "encoding_tol": (
        float,
        "stop once no encoding probability moves more than this in 25 steps (rounded up to "
        "whole windows; 0: never)",
    ),
    "samples": (
        int,
        "reinforce: (architecture, hyper-parameter) pairs sampled per step, all workers",
    ),
    "seed": (int, "random seed"),
    "max_search_seconds": (
        float,
        "stop the search after this many seconds and derive from where it is (0: no limit)",
    ),
    "hp_signal": (
        str,
        "hyper-parameter signal: 'window' (temporary weights --horizon steps long, the default) "
        "or 'one-step' (one temporary step every step: the patent's form)",
    ),
    "horizon": (int, "window length in steps: the encodings move once per window"),
    "augment_examples": (
        str,
        "which examples the augmentation bases see in a step: 'same' (each basis the same "
        "part of the batch, the default) or 'split' (each its own part)",
    ),
    "lr_derivation": (
        str,
        "derived learning rate: the searched schedule's 'peak' (default) or the final "
        "'encoding' (weighted sum of the bases)",
    ),
    "race_steps": (
        int,
        "length of the training race: the derived model trains from scratch with every "
        "(optimizer, rate) basis pair (a quarter of it, then the best third all of it) and "
        "retrains with the best on validation (-1: a twentieth of --retrain-steps, at least 20; "
        "0: no race)",
    ),
    "max_race_seconds": (
        float,
        "time budget of the whole training race: its trainings shorten to fit (at least 10 "
        "steps, else no race; 0: no limit)",
    ),
    "within_points": (
        float,
        "ask for a compact model: the derived model and variants of a half and a quarter its "
        "size (from the same encodings) train for the race's length, and the smallest within "
        "this many points of the best validation accuracy is retrained (0: the derived model)",
    ),
    "retrain_schedule": (
        str,
        "retraining rate: 'cosine' around the derived rate or the 'searched' trajectory "
        "(a finished search is retrained under another schedule or length with --retrain)",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of `autohas search`."""
    defaults = SearchConfig()
    parser.add_argument(
        "--dataset",
        default=defaults.dataset,
        help="mnist1d, digits, or a path to an .npz with x and y (optionally x_test, y_test, "
        "label_names, layout, channels)",
    )
    parser.add_argument(
        "--layout",
        default=defaults.layout,
        choices=LAYOUTS,
        help=f"how to read one example: {SHAPE_RULES} (auto: the .npz's `layout`, else by the "
        "rank of x, with a warning when that is ambiguous)",
    )
    parser.add_argument(
        "--channels",
        default="",
        choices=("first", "last"),
        help="where the channel axis of a signal or image is (default: the .npz's `channels`, "
        "else first)",
    )
    parser.add_argument(
        "--mode",
        default=defaults.mode,
        choices=MODES,
        help="joint; nas: hyper-parameters fixed; hpo: architecture fixed",
    )
    parser.add_argument(
        "--strategy",
        default=defaults.strategy,
        choices=STRATEGIES,
        help="mix candidates (differentiable) or sample them (reinforce controller)",
    )
    parser.add_argument(
        "--device",
        default=defaults.device,
        choices=DEVICES,
        help="auto picks CUDA when present (with bfloat16 mixed precision)",
    )
    parser.add_argument(
        "--out", default="runs/search", help="run directory (resumes when it holds a search)"
    )
    for name, (kind, help_text) in _FLAGS.items():
        default = getattr(defaults, name)
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=default,
            help=f"{help_text} (default {default})",
        )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads per worker (default 0: the usable cores, shared among the workers)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="retrain a finished run again (with the retraining settings given; a finished run is "
        "otherwise reported and left alone)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="search worker processes (starts torchrun: gloo on CPU, one GPU each with CUDA; default 1)",
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m autohas_edge.server.search.cli` (also what torchrun can start in every worker)."""
    from autohas_edge.server.search.threads import prepare_environment

    prepare_environment()
    from autohas_edge.server.cli import make_parser

    parser = make_parser("search", __doc__ or "")
    add_arguments(parser)
    return run(parser.parse_args(argv))


class _Exit(Exception):
    """Ends the command with an exit code and a message for stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def run(args: argparse.Namespace) -> int:
    """Run the search; exit 0, 2 on a bad dataset or option, 1 when workers fail, 130 when interrupted."""
    from autohas_edge.server.search.distributed import launched_by_torchrun

    interrupted = {"flag": False}
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.update(flag=True))
    bar = _ProgressBar(disabled=args.quiet)
    try:
        config = _config(args)
        _check_out(Path(args.out))
        finished = None if args.retrain else _finished(Path(args.out), config)
        if finished is not None:
            print(_summary(finished, args.out))
            print(f"{args.out} holds this finished run: left alone (--retrain retrains it)")
            return 0
        _preview(config)
        search = _with_workers if args.workers > 1 and not launched_by_torchrun() else _in_process
        result = search(config, args, bar, lambda: interrupted["flag"])
    except _Exit as exc:
        bar.close()
        if _is_main_rank():  # under torchrun every rank fails alike: one message
            print(f"autohas search: {exc}", file=sys.stderr)
        return exc.code
    finally:
        signal.signal(signal.SIGINT, previous)
    bar.close()
    if result:  # under torchrun only rank 0 has the result
        print(_summary(result, args.out))
    return 0


def _config(args: argparse.Namespace) -> SearchConfig:
    if args.workers < 1:
        raise _Exit(2, f"error: --workers must be >= 1, got {args.workers}")
    try:
        return SearchConfig(
            dataset=args.dataset,
            layout=args.layout,
            channels=args.channels or "",
            mode=args.mode,
            strategy=args.strategy,
            device=args.device,
            **{name: getattr(args, name) for name in _FLAGS},
        )
    except ValueError as exc:
        raise _Exit(2, f"error: {exc}") from exc


def _is_main_rank() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise _Exit(2, f"error: --out {out} is a file, not a run directory")


def _preview(config: SearchConfig) -> None:
    """Load the dataset once before the search starts: bad data is a one-line error now, and an
    ambiguous layout or remapped labels are said before the work, not after."""
    from autohas_edge.server.search.data import load_dataset

    try:
        data = load_dataset(config.dataset, config.seed, config.layout, config.channels)
    except ValueError as exc:
        raise _Exit(2, f"error: {exc}") from exc
    if _is_main_rank():
        for note in data.notes:
            print(f"autohas search: {note}", file=sys.stderr)


def _finished(out: Path, config: SearchConfig) -> dict[str, Any] | None:
    """result.json of a finished run in `out` with the same search settings, else None (a run
    with other search settings is refused by `run_search` with its own message)."""
    path = out / "result.json"
    if not path.is_file():
        return None
    try:
        result: dict[str, Any] = json.loads(path.read_text())
        saved = SearchConfig.from_json(result["config"]).search_part()
    except (ValueError, KeyError, TypeError):
        return None  # unreadable or from another version: run_search decides
    return result if saved == config.search_part() else None


def _in_process(
    config: SearchConfig,
    args: argparse.Namespace,
    bar: _ProgressBar,
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    """The search in this process (also each rank's part under torchrun)."""
    from autohas_edge.server.search.runner import run_search
    from autohas_edge.server.search.threads import apply_threads

    apply_threads(args.threads)
    try:
        return run_search(config, args.out, on_progress=bar.update, should_stop=should_stop)
    except ValueError as exc:
        raise _Exit(2, f"error: {exc}") from exc
    except SearchCancelled as exc:
        raise _Exit(130, str(exc)) from exc


def _with_workers(
    config: SearchConfig,
    args: argparse.Namespace,
    bar: _ProgressBar,
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    """The search in `args.workers` processes under torchrun (see `launcher`); Ctrl-C reaches
    this process only, which asks rank 0 to checkpoint and stop all ranks at the same step."""
    from autohas_edge.server.search import launcher

    try:
        return launcher.run(
            config, args.out, args.workers, bar.update, should_stop, threads=args.threads
        )
    except SearchCancelled as exc:
        raise _Exit(130, str(exc)) from exc
    except launcher.WorkersFailed as exc:
        raise _Exit(1, f"error: {exc}") from exc


def _summary(result: dict[str, Any], out: str) -> str:
    arch = ", ".join(f"{k}={v}" for k, v in result["architecture"].items())
    hps = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in result["hyperparameters"].items()
    )
    dropped = "".join(
        f"\ndropped {name} candidates {', '.join(labels)}: same output as a smaller candidate "
        "here (identically zero gradient)"
        for name, labels in result.get("dropped_candidates", {}).items()
    )
    race = result.get("race") or {}
    seconds = f"search {result['search_seconds']:.0f}s"
    if race.get("entries"):
        seconds += f", race {result.get('race_seconds', 0):.0f}s"
    return (
        f"{_data_line(result)}"
        f"test accuracy {result['test_accuracy']:.4f} with {result['params']} parameters "
        f"({seconds}, retrain {result['retrain_seconds']:.0f}s)\n"
        f"architecture: {arch}\nhyper-parameters: {hps}\n{_rate_line(result)}{_race_line(race)}"
        f"{_compact_line(result.get('compact') or {}, result['params'])}{dropped}"
        f"\nwritten to {out}/result.json"
    )


def _data_line(result: dict[str, Any]) -> str:
    """Which layout the data was read as and which model family that chose."""
    data = result.get("dataset") or {}
    if "layout" not in data:  # a run from before layouts were recorded
        return ""
    shape = "x".join(str(d) for d in data["input_shape"])
    return (
        f"data: {data['name']}, {data['layout']} [{shape}] ({data['layout_source']}), "
        f"{data['num_classes']} classes -> {data['family']} models\n"
    )


def _rate_line(result: dict[str, Any]) -> str:
    """What the optimizer really uses: `learning_rate` above is SGD-equivalent (see LR_SCALE)."""
    hps = result["hyperparameters"]
    used = result.get("effective_learning_rate", hps["learning_rate"])
    return (
        f"{hps['optimizer']} trains at a peak rate of {used:.3g} "
        f"(learning_rate={hps['learning_rate']:.3g} is its SGD-equivalent)"
    )


def _race_line(race: dict[str, Any]) -> str:
    """Which pair won the training race, against the pair the encodings derived."""
    from autohas_edge.server.search.race import Entry, winner

    entries, derived = [Entry(**e) for e in race.get("entries") or []], race.get("derived") or {}
    if not entries:
        return ""
    best = winner(entries)
    return (
        f"\ntraining race ({len(entries)} trainings, {best.steps} steps in the last rung): "
        f"{best.optimizer} at {best.learning_rate:.3g} won (validation accuracy "
        f"{best.val_accuracy:.3f}); the encodings derived {derived.get('optimizer')} at "
        f"{float(derived.get('learning_rate', 0)):.3g}"
    )


def _compact_line(compact: dict[str, Any], params: int) -> str:
    """With `--within-points`: the sizes compared and which one was kept."""
    sizes = compact.get("sizes") or []
    if not sizes:
        return ""
    compared = ", ".join(f"{s['params']:,} ({s['val_accuracy']:.3f})" for s in sizes)
    return (
        f"\ncompact model (within {compact['within_points']:g} points): sizes (validation "
        f"accuracy) {compared}; kept {params:,} parameters"
    )


class _ProgressBar:
    """One tqdm bar per stage (search, race, then retrain)."""

    def __init__(self, disabled: bool) -> None:
        self.disabled, self.stage = disabled, ""
        self.bar: tqdm[Any] | None = None

    def update(self, event: Any) -> None:
        """Advance (or open) the bar of the event's stage."""
        if self.disabled or event.stage not in ("search", "race", "retrain"):
            return
        if event.stage != self.stage:
            from tqdm import tqdm

            self.close()
            self.stage = event.stage
            self.bar = tqdm(
                total=event.total_steps, desc=event.stage, initial=event.step - 1, file=sys.stderr
            )
        bar = self.bar
        assert bar is not None  # opened when the stage began
        bar.update(event.step - bar.n)
        figures = {"loss": event.train_loss, "lr": event.learning_rate, "val": event.val_loss}
        # figures a stage does not report are NaN (a race training reports none): left out
        postfix = {k: f"{v:.3g}" if k == "lr" else f"{v:.3f}" for k, v in figures.items() if v == v}
        bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        """Close the current bar, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


if __name__ == "__main__":
    sys.exit(main())

"""Device SDK benchmark: per-user gains from local fine-tuning, its cost, memory and predict latency.

    python -m bench.bench_sdk                   # search + export a bundle once (torch), then measure
    python -m bench.bench_sdk --bundle DIR      # measure an existing bundle
    python -m bench.bench_sdk --trainable head  # what fine-tuning trains (default: the manifest's)

The measuring runs in a child process where torch cannot be imported, so its peak memory is what an
app embedding the SDK pays. Results go to the "device SDK" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from autohas_edge.device_sdk import Hub, Model
from autohas_edge.device_sdk.finetune import TRAINABLE
from autohas_edge.server.demo.population import SHIFTS, User, global_test_split, make_user
from bench.results import markdown_table, write_section

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "sdk"
SECTION = "device SDK"
FORMATS = ("onnx", "tflite")
TASK = "mnist1d"
_USER_KEYS = ("x_tune", "y_tune", "x_eval", "y_eval")

#: installed in the child before anything else: any torch import fails
BLOCK_TORCH = """
import importlib.abc, sys
class _BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in the SDK benchmark")
        return None
sys.meta_path.insert(0, _BlockTorch())
sys.modules["torch"] = None
from bench.bench_sdk import measure_main
measure_main()
"""


def build_bundle(out: Path, steps: int, retrain_steps: int) -> Path:
    """Search MNIST-1D and export ONNX + TFLite (torch, in child processes); reused when present."""
    run, dist = out / "run", out / "dist"
    bundle = dist / run.name
    if (bundle / "manifest.json").is_file():
        return bundle
    cli = [sys.executable, "-m", "autohas_edge.server.cli"]
    search = ["search", "--dataset", "mnist1d", "--steps", str(steps), "--retrain-steps", str(retrain_steps),
              "--device", "cpu", "--out", str(run), "--quiet"]  # fmt: skip
    subprocess.run([*cli, *search], cwd=ROOT, check=True)
    export = ["export", str(run), "--formats", ",".join(FORMATS), "--out", str(dist)]
    subprocess.run([*cli, *export], cwd=ROOT, check=True)
    return bundle


def write_users(bundle: Path, users: int, path: Path) -> None:
    """Simulate the users (outside the measured process) and save their examples to one `.npz`."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    x, y = global_test_split(manifest["dataset"]["name"])
    arrays: dict[str, np.ndarray] = {"x": x, "y": y}
    for i in range(users):
        person = make_user(x, y, i, SHIFTS[i % len(SHIFTS)])
        for key in _USER_KEYS:
            arrays[f"{person.user_id}/{key}"] = getattr(person, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def load_users(path: Path) -> tuple[np.ndarray, np.ndarray, list[User]]:
    """Inverse of `write_users`: global test examples and the users."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    ids = sorted({k.split("/")[0] for k in arrays if "/" in k})
    people = [User(i, i.split("-", 1)[1], *(arrays[f"{i}/{k}"] for k in _USER_KEYS)) for i in ids]
    return arrays["x"], arrays["y"], people


def measure_in_child(
    bundle: Path, users: Path, work: Path, trainable: str | None = None
) -> dict[str, Any]:
    """Run `measure_main` in a fresh torch-blocked interpreter and return its JSON report."""
    args = json.dumps(
        {"bundle": str(bundle), "users": str(users), "work": str(work), "trainable": trainable}
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SDK_BENCH_ARGS": args}
    done = subprocess.run([sys.executable, "-c", BLOCK_TORCH], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_main() -> None:
    """Child entry point: measure and print one JSON line."""
    args = json.loads(os.environ["SDK_BENCH_ARGS"])
    paths = (Path(args["bundle"]), Path(args["users"]), Path(args["work"]))
    print(json.dumps(measure(*paths, trainable=args.get("trainable"))))


def measure(bundle: Path, users: Path, work: Path, trainable: str | None = None) -> dict[str, Any]:
    """Fine-tune every simulated user on both runtimes; time predict; report peak memory.

    `trainable` overrides what the manifest says fine-tuning trains ("head", "input+head").
    """
    shutil.rmtree(work, ignore_errors=True)
    # one core, as on a busy phone; the bundle is one this benchmark exported itself (unsigned)
    hub = Hub(work / "hub", threads=1, allow_unsigned=True)
    hub.install(bundle, TASK)
    x, y, people = load_users(users)
    manifest = json.loads((bundle / "manifest.json").read_text())
    hp = manifest["fine_tuning"]["hyperparameters"]
    overrides = {"trainable": trainable} if trainable else {}
    out: dict[str, Any] = {"bundle": str(bundle), "users": {}, "summary": {"users": len(people)},
                           "hyperparameters": {**hp, **overrides}}  # fmt: skip
    shared = hub.model(TASK, app_id="bench.global")
    out["global_test_accuracy"] = float(np.mean(shared.predict(x).argmax(1) == y))
    for fmt in FORMATS:
        rows = [_user(hub, person, fmt, overrides) for person in people]
        out["users"][fmt] = rows
        model = hub.model(TASK, app_id="bench.global", format=fmt)
        out["summary"][fmt] = {**_summary(rows), **_latency(model, x)}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _user(hub: Hub, person: User, fmt: str, overrides: dict[str, str]) -> dict[str, Any]:
    model = hub.model(TASK, app_id=f"bench.{fmt}.{person.user_id}", private=True, format=fmt)
    before = _accuracy(model, person)
    result = model.fine_tune(person.x_tune, person.y_tune, hyperparameters=overrides)
    return {
        "user": person.user_id,
        "shift": person.shift,
        "before": before,
        "after": _accuracy(model, person),
        "accepted": result.accepted,
        "seconds": result.seconds,
    }


def _accuracy(model: Model, person: User) -> float:
    return float(np.mean(model.predict(person.x_eval).argmax(1) == person.y_eval))


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    gains = np.array([r["after"] - r["before"] for r in rows])
    shifted = np.array([r["shift"] != "none" for r in rows])
    return {
        "gain": float(gains.mean()),
        "shifted_gain": float(gains[shifted].mean()),
        "worse": int(np.sum(gains < -1e-9)),
        "max_seconds": max(r["seconds"] for r in rows),
        "mean_seconds": float(np.mean([r["seconds"] for r in rows])),
    }


def _latency(model: Model, x: np.ndarray, repeats: int = 200) -> dict[str, float]:
    model.predict(x[:64])  # warm-up
    return {
        "latency_1_ms": _median_ms(lambda: model.predict(x[0]), repeats),
        "latency_64_ms": _median_ms(lambda: model.predict(x[:64]), repeats // 4),
    }


def _median_ms(call: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


#: summary rows: label, key in the per-format summary, format, target
_METRICS = (
    ("mean gain, shifted users (points)", "shifted_gain", "{:+.1f}", ">= +8"),
    ("mean gain, all users (points)", "gain", "{:+.1f}", ""),
    ("users worse after fine-tuning", "worse", "{}", "0"),
    ("fine-tune time per user, mean (s)", "mean_seconds", "{:.3f}", ""),
    ("fine-tune time per user, max (s)", "max_seconds", "{:.3f}", "<= 0.5"),
    ("predict latency, 1 example, median (ms)", "latency_1_ms", "{:.3f}", ""),
    ("predict latency, batch of 64, median (ms)", "latency_64_ms", "{:.3f}", ""),
)


def _user_rows(users: list[dict[str, Any]]) -> list[list[object]]:
    return [
        [u["user"], u["shift"], f"{u['before']:.1%}", f"{u['after']:.1%}",
         f"{(u['after'] - u['before']) * 100:+.1f}", "yes" if u["accepted"] else "no (kept previous)",
         f"{u['seconds'] * 1000:.0f}"]
        for u in users
    ]  # fmt: skip


def _summary_rows(summary: dict[str, Any]) -> list[list[object]]:
    rows = []
    for label, key, fmt, target in _METRICS:
        scale = 100 if "gain" in key else 1  # gains are shares, shown in points
        rows.append([label, *(fmt.format(summary[f][key] * scale) for f in FORMATS), target])
    return rows


def report(result: dict[str, Any]) -> str:
    """The Markdown body of the RESULTS.md section."""
    s = result["summary"]
    return "\n".join([
        f"Bundle: `{result['bundle']}` (global test accuracy {result['global_test_accuracy']:.1%}; "
        f"fine-tuning hyper-parameters (the manifest's, `trainable` as run): "
        f"`{json.dumps(result['hyperparameters'])}`).",
        f"{s['users']} simulated users, MNIST-1D test examples: label skew (80% of examples from 4 "
        "classes) plus a per-user shift (`none` users get the skew only); 120 examples to fine-tune on "
        "(25% of them held out inside `fine_tune`), 200 later examples to measure on. Table: ONNX runtime.",
        "",
        markdown_table(["user", "shift", "global model", "fine-tuned", "points", "accepted", "fine-tune ms"],
                       _user_rows(result["users"]["onnx"])),
        "",
        markdown_table(["metric", *FORMATS, "target"], _summary_rows(s)),
        "",
        f"SDK process peak memory (max RSS; torch blocked; both runtimes loaded, {s['users']} users x 2 "
        f"formats fine-tuned): **{result['peak_rss_mb']:.0f} MB** (target < 300 MB).",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Build (or take) a bundle, measure in a torch-free child, write RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bundle", type=Path, help="an exported bundle (default: search + export one)"
    )
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument(
        "--steps", type=int, default=200, help="search steps when building the bundle"
    )
    parser.add_argument("--retrain-steps", type=int, default=1500)
    parser.add_argument(
        "--trainable",
        choices=TRAINABLE,
        help="what fine-tuning trains (default: the manifest's fine_tuning.hyperparameters)",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print, do not update bench/RESULTS.md"
    )
    args = parser.parse_args(argv)
    bundle = args.bundle or build_bundle(OUT, args.steps, args.retrain_steps)
    users = OUT / "work" / "users.npz"
    write_users(bundle, args.users, users)
    result = measure_in_child(bundle.resolve(), users, OUT / "work" / "device", args.trainable)
    body = report(result)
    print(body)
    if not args.no_write:
        command = "python -m bench.bench_sdk" + (f" --bundle {args.bundle}" if args.bundle else "")
        command += f" --trainable {args.trainable}" if args.trainable else ""
        write_section(SECTION, command, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

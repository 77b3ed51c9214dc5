"""Export benchmark: file size per format and torch eager vs onnxruntime vs LiteRT latency, float and int8.

    python -m bench.bench_export [--run RUN_DIR] [--repeats N]

Without `--run` it searches MNIST-1D first (default search settings, resumable, in runs/bench-mnist1d).
Every runtime gets one thread (an edge CPU core; stable on a shared machine); a latency is the median of
`--repeats` timed calls after warm-up. A batch-1 TFLite model serves a batch of 32 as 32 calls.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.results import RESULTS, markdown_table, write_section

NAME = "export"
RUN_DIR = Path("runs/bench-mnist1d")
DIST_DIR = Path("dist/bench")
WARMUP = 20


def median_ms(call: Callable[[], object], repeats: int) -> float:
    """Median wall-clock milliseconds of `call()` over `repeats` runs, after a warm-up."""
    for _ in range(WARMUP):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - start) / 1e6)
    return statistics.median(times)


def torch_call(model: Any, x: np.ndarray) -> Callable[[], object]:
    """Eager torch forward pass in inference mode, one thread."""
    import torch

    torch.set_num_threads(1)
    tensor = torch.from_numpy(x)

    def call() -> object:
        with torch.inference_mode():
            return model(tensor)

    return call


def onnx_call(path: Path, x: np.ndarray) -> Callable[[], object]:
    """One onnxruntime session.run on `x`, one intra-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    return lambda: session.run(None, feed)


def litert_call(path: Path, x: np.ndarray) -> Callable[[], object]:
    """LiteRT interpreter invoke(s) on `x`: one call for a matching batch, else one call per row."""
    from autohas_edge.export.runtimes import tflite_interpreter_class

    interpreter = tflite_interpreter_class()(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = [x] if int(inp["shape"][0]) == len(x) else [x[i : i + 1] for i in range(len(x))]

    def call() -> object:
        for row in rows:
            interpreter.set_tensor(inp["index"], row)
            interpreter.invoke()
        return interpreter.get_tensor(out["index"])

    return call


def measure(run_dir: Path, bundle: Path, x: np.ndarray, repeats: int) -> list[list[object]]:
    """Table rows: runtime, precision, file, KiB, test accuracy, 1-input and batch-32 latency, speed-up."""
    import json

    from autohas_edge.server.search import load_model

    manifest = json.loads((bundle / "manifest.json").read_text())
    records = manifest["verification"]["artifacts"]
    model, result = load_model(run_dir)
    one, batch = x[:1], x[:32]
    cases = [
        (
            "torch eager",
            "float32",
            run_dir / "model.pt",
            result["test_accuracy"],
            lambda a: torch_call(model, a),
        )
    ]
    for fmt, runtime, factory in (
        ("onnx", "onnxruntime", onnx_call),
        ("tflite", "LiteRT", litert_call),
    ):
        for file, precision in ((f"model.{fmt}", "float32"), (f"model_int8.{fmt}", "int8")):
            accuracy = records[file].get(
                "test_accuracy", manifest["verification"]["float_test_accuracy"]
            )
            cases.append(
                (
                    runtime,
                    precision,
                    bundle / file,
                    accuracy,
                    lambda a, p=bundle / file, f=factory: f(p, a),
                )
            )
    rows, torch_one = [], None
    for runtime, precision, path, accuracy, make in cases:
        single, batched = (
            median_ms(make(one), repeats),
            median_ms(make(batch), max(repeats // 4, 10)),
        )
        torch_one = torch_one or single
        rows.append([runtime, precision, path.name, f"{path.stat().st_size / 1024:.1f}", f"{accuracy:.2%}",
                     f"{single:.3f}", f"{batched:.3f}", f"{torch_one / single:.1f}x"])  # fmt: skip
    return rows


def ensure_run(run_dir: Path) -> Path:
    """`run_dir` if it holds a finished run, else search MNIST-1D into it (default settings)."""
    if (run_dir / "model.pt").is_file():
        return run_dir
    from autohas_edge.server.search import SearchConfig, run_search

    run_search(SearchConfig(dataset="mnist1d", device="cpu"), run_dir)
    return run_dir


def main(argv: list[str] | None = None) -> int:
    """Search (if needed), export all four formats, time them, write bench/RESULTS.md's section."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_export", description=__doc__)
    parser.add_argument(
        "--run", type=Path, default=None, help=f"a finished run (default: search into {RUN_DIR})"
    )
    parser.add_argument(
        "--repeats", type=int, default=300, help="timed calls per single-input latency"
    )
    parser.add_argument("--out", type=Path, default=DIST_DIR, help="where the bundle is written")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the Markdown file to update")
    args = parser.parse_args(argv)
    from autohas_edge.export import ALL_FORMATS, export_run
    from autohas_edge.export.run import dataset_spec, read_result
    from autohas_edge.server.search import load_dataset

    run_dir = ensure_run(args.run or RUN_DIR)
    report = export_run(run_dir, args.out, ALL_FORMATS)
    x = np.ascontiguousarray(
        load_dataset(dataset_spec(read_result(run_dir))).x_test, dtype=np.float32
    )
    load = os.getloadavg()[0]
    rows = measure(run_dir, report.bundle, x, args.repeats)
    headers = [
        "runtime",
        "precision",
        "file",
        "KiB",
        "test acc",
        "1 input (ms)",
        "batch 32 (ms)",
        "vs torch (1 input)",
    ]
    body = _body(run_dir, report, rows, load)
    command = "python -m bench.bench_export" + (f" --run {args.run}" if args.run else "")
    table = markdown_table(headers, rows)
    write_section(
        NAME, command + f" --repeats {args.repeats}", table + "\n\n" + body, path=args.results
    )
    print(markdown_table(headers, rows))
    return 0


def _body(run_dir: Path, report: Any, rows: list[list[object]], load: float) -> str:
    import json

    manifest = json.loads((report.bundle / "manifest.json").read_text())
    config = json.loads((run_dir / "result.json").read_text())["config"]
    tflite = next(a for a in manifest["artifacts"] if a["file"] == "model.tflite")
    speedup = float(str(rows[1][-1]).rstrip("x"))
    verdict = "met" if speedup >= 2 else "NOT met"
    name, params = manifest["dataset"]["name"], manifest["search_metrics"]["params"]
    lines = [
        f"Model: `{run_dir}` ({name}, {params} parameters), from a {config['mode']} {config['strategy']} "
        f"search of {config['steps']} steps + {config['retrain_steps']} retraining steps.",
        f"Exporting 4 formats x 2 roles (model, features) with verification took {report.seconds:.0f} s.",
        "One thread per runtime; medians of repeated calls; test accuracy on the full test split; "
        f"1-minute load average at the start {load:.1f} (a shared machine: small latencies are noisy).",
        f"Target onnxruntime >= 2x torch eager on one input: {speedup:.1f}x, {verdict}.",
    ]
    if tflite["batch"] != "dynamic":
        why = "litert-torch cannot convert a dynamic batch for it; see the manifest's batch_note"
        lines.append(
            f"LiteRT runs the batch-{tflite['batch']} model once per row for batch 32 ({why})."
        )
    return "\n".join(f"- {line}" for line in lines)


if __name__ == "__main__":
    sys.exit(main())

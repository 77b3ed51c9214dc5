"""A short, prepared check for a GPU machine (the CUDA path cannot run on the development box).

    python -m bench.device_check [--device cuda] [--steps 20]

1. both strategies search MNIST-1D on the device (bfloat16 autocast on CUDA): time per step and
   `torch.cuda.max_memory_allocated`;
2. a sampled sub-model computes what its one-hot mixture computes on the device, under the same autocast;
3. with 2+ GPUs: a 2-worker NCCL search finishes with identical encodings on both ranks.

Prints one JSON line per check and exits 1 if any failed. `--device cpu` runs the same checks here.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.bench_strategies import ROOT, STRATEGIES, probe


def sub_model_matches(device: str, seed: int = 0) -> dict[str, Any]:
    """Largest difference between a random sampled sub-model and its one-hot mixture on `device`."""
    import torch

    from autohas_edge.server.search import LAYOUTS, SubModel, SuperNet, autocast, default_space

    rng = random.Random(seed)
    space = default_space(LAYOUTS["conv1d"], "signal", "joint")
    picks = {c.name: rng.randrange(len(c)) for c in space.arch}
    one_hot = {
        c.name: torch.nn.functional.one_hot(torch.tensor(picks[c.name]), len(c)).float().to(device)
        for c in space.arch
    }
    torch.manual_seed(seed)
    net = SuperNet(LAYOUTS["conv1d"], space.arch, (1, 40), 10).to(device).eval()
    x = torch.randn(64, 1, 40, device=device)
    with torch.no_grad(), autocast(torch.device(device)):
        mixed, sliced = net(x, one_hot).float(), net(x, SubModel(picks)).float()
    diff = float((mixed - sliced).abs().max())
    tolerance = 5e-2 if device.startswith("cuda") else 1e-4  # bfloat16 keeps ~3 significant digits
    return {
        "check": "sub-model == one-hot mixture",
        "device": device,
        "max_abs_diff": diff,
        "ok": diff <= tolerance,
    }


def two_workers(steps: int) -> dict[str, Any]:
    """A 2-worker CUDA search through the CLI (NCCL)."""
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable,
            "-m",
            "autohas_edge.server.search.cli",
            "--device",
            "cuda",
            "--workers",
            "2",
            "--strategy",
            "reinforce",
            "--steps",
            str(steps),
            "--retrain-steps",
            "10",
            "--out",
            out,
            "--quiet",
        ]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            return {"check": "2 NCCL workers", "ok": False, "stderr": done.stderr[-2000:]}
        workers = json.loads((Path(out) / "result.json").read_text())["workers"]
    return {
        "check": "2 NCCL workers",
        **workers,
        "ok": workers.get("backend") == "nccl" and workers.get("max_encoding_difference") == 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the checks; 0 when all passed."""
    import torch

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"check": "cuda available", "ok": False}))
        return 1
    results = [
        {"check": f"search ({s})", **probe(s, 128, args.steps, args.device), "ok": True}
        for s in STRATEGIES
    ]
    results.append(sub_model_matches(args.device))
    if args.device == "cuda" and torch.cuda.device_count() >= 2:
        results.append(two_workers(args.steps))
    for result in results:
        print(json.dumps(result), flush=True)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Infer latency of every task through the real server (loopback only, bounded number of calls).

    .venv/bin/python benchmarks/latency.py [--calls 10]

Starts ``monailabel start_server`` with the MRI app on a fresh copy of the synthetic sample data, gives every
task a checkpoint (the networks' initial weights: timing does not depend on the weights), and prints one
table: server start to ready, first infer, warm p50/p95, and MONAI Label's own split of the warm time.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "apps" / "mri_app")]

CASES = [  # task, image id, what the image is
    ("sequence", "synth_slice01", "128x128 PNG slice"),
    ("sequence", "synth01_t1", "96x96x16 volume"),
    ("dementia_stage", "synth01_t1", "96x96x16 volume"),
    ("tumor_gate", "synth_slice01", "128x128 PNG slice"),
    ("tumor_gate", "synth01_flair", "96x96x16 volume"),
    ("tumor_seg", "synth01_flair", "96x96x16 volume"),
    ("tumor_pipeline", "synth01_flair", "96x96x16 volume"),
    ("hippocampus", "synth_hippo01_t1", "64x48x40 volume"),
]


def write_checkpoints(models_dir: Path) -> None:
    import torch
    from main import discover_configs

    for name, cls in discover_configs().items():
        config = cls()
        config.init(name, str(models_dir), {}, None)
        Path(config.path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": config.network.state_dict()}, config.path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10, help="warm calls per case (1..100)")
    args = parser.parse_args()
    if not 1 <= args.calls <= 100:
        parser.error(f"--calls must lie in 1..100, got {args.calls}")

    from live_server import running_server
    from mri_label.sample_data import write_sample_data

    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template"
        write_sample_data(template)
        write_checkpoints(Path(tmp) / "run" / "model")
        (Path(tmp) / "run").mkdir(exist_ok=True)
        with running_server(Path(tmp) / "run", template) as server:
            print(f"server start to ready: {server['startup_s']:.1f} s")
            print(f"{'task':<16}{'input':<20}{'first ms':>10}{'p50 ms':>9}{'p95 ms':>9}   server split (p50 call, ms)")
            for task, image, what in CASES:
                url = f"{server['url']}/infer/{task}?image={image}&output=json"
                started = time.perf_counter()
                first = requests.post(url, timeout=300)
                first_ms = (time.perf_counter() - started) * 1000
                first.raise_for_status()
                times, splits = [], []
                for _ in range(args.calls):
                    started = time.perf_counter()
                    response = requests.post(url, timeout=300)
                    times.append((time.perf_counter() - started) * 1000)
                    splits.append(response.json().get("latencies", {}))
                p50 = statistics.median(times)
                p95 = sorted(times)[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
                split = splits[times.index(sorted(times)[len(times) // 2])]
                parts = {k: round(v * 1000) for k, v in split.items() if isinstance(v, (int, float))}
                print(f"{task:<16}{what:<20}{first_ms:>10.0f}{p50:>9.0f}{p95:>9.0f}   {json.dumps(parts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

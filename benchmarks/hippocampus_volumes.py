"""Hippocampus volumes of the shipped checkpoint on whole-head T1s that come with the project's packages and data:
the MNI152 template bundled with nilearn and, where ``../shared/data`` is present, the BraTS 2018 T1s.

    .venv/bin/python benchmarks/hippocampus_volumes.py [--data ../shared/data]

Prints one row per T1: left and right mm³ per label of the hippocampus config (in its order) / total, the volume
check, and seconds.
"""

import argparse
import glob
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "apps" / "mri_app"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()

    from lib.task_config import SHIPPED_DIR
    from main import discover_configs
    from mri_label.core.templates import template_path

    config = discover_configs()["hippocampus"]()
    config.init("hippocampus", tempfile.mkdtemp(prefix="hippocampus_volumes_"), {"shipped_models": SHIPPED_DIR}, None)
    if not config.shipped_path:
        parser.error(f"no shipped hippocampus checkpoint in {SHIPPED_DIR}")
    infer = config.infer()
    images = [template_path()] + sorted(glob.glob(os.path.join(args.data, "brats2018", "*", "*_t1.nii.gz")))
    print("| T1 | left | right | volume check | s |\n|---|---|---|---|---|")
    for image in images:
        file, result = infer({"image": image, "device": "cpu"})
        os.remove(file)
        m = result["measurements"]
        sides = [" / ".join(f"{m[s][f'{n}_mm3']:.0f}" for n in [*config.labels, "total"]) for s in ("left", "right")]
        name = os.path.basename(image).replace(".nii.gz", "")
        print(
            f"| {name} | {sides[0]} | {sides[1]} | {m['volume_check']['status']} | "
            f"{result['latencies']['total']:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

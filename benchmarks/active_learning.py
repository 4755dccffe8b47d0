"""Simulated annotation loop: how many labels does an uncertainty strategy save over random picking?

Start from K labelled training cases; each round the strategy picks M unlabelled training cases, their
ground-truth masks are revealed (as if a clinician had corrected them), the model is fine-tuned from its
current checkpoint the way the server does it (``finetune`` request: start from the served checkpoint,
promote only if not worse on the fixed validation split), and the served checkpoint is scored (mean
foreground Dice) on the held-out test split. The validation subjects stay labelled throughout (the fixed
split the promotion is judged on); test subjects are never trained on.

Runs on CPU with small budgets, e.g. on the Decathlon hippocampus set::

    .venv/bin/python benchmarks/active_learning.py --source ../shared/data/Task04_Hippocampus \\
        --start 8 --per-round 4 --rounds 3 --epochs 2 --pool 40 --test 20

prints, for ``epistemic`` (Monte-Carlo dropout) and ``random`` with the same seed and budgets, the curve
``labels used -> test Dice``, the full-pool reference Dice and the labels each strategy needed to reach 95 % of it.
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "apps" / "mri_app"))


def _dice(prediction: np.ndarray, truth: np.ndarray, labels) -> float:
    scores = []
    for k in labels:
        p, t = prediction == k, truth == k
        denominator = p.sum() + t.sum()
        scores.append(1.0 if denominator == 0 else 2.0 * np.logical_and(p, t).sum() / denominator)
    return float(np.mean(scores))


def _build(task: str, model_dir: str, conf: dict):
    from main import discover_configs

    config = discover_configs()[task]()
    config.init(task, model_dir, conf, None)
    return config


def _store(folder: str):
    from monailabel.config import settings

    from lib.datastore import MRIDatastore

    return MRIDatastore(folder, extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT, auto_reload=False)


def _evaluate(config, datastore, images) -> float:
    import nibabel as nib
    from nibabel.spatialimages import SpatialImage

    infer = config.infer()
    scores = []
    for image in images:
        label_path, _ = infer({"image": datastore.get_image_uri(image), "device": "cpu"})
        truth_id = datastore.get_label_by_image_id(image, "final")
        # nibabel annotates load() with the base class; these are NIfTI images
        truth = np.asarray(cast(SpatialImage, nib.load(datastore.get_label_uri(truth_id, "final"))).dataobj)
        prediction = np.asarray(cast(SpatialImage, nib.load(label_path)).dataobj)
        os.remove(label_path)
        scores.append(_dice(prediction.reshape(truth.shape), truth, config.labels.values()))
    return float(np.mean(scores))


def _train(config, datastore, epochs: int, finetune: bool, run: str, seed: int = 0) -> dict:
    from monai.utils import set_determinism

    set_determinism(seed=seed)  # the same start set trains to the same model for every strategy
    request = {
        "max_epochs": epochs,
        "name": "al_bench",
        "finetune": finetune,
        "al_run": run,
        "dataset": "CacheDataset",
        "early_stop_patience": 0,
        "device": "cpu",
    }
    stats = config.trainer()(request, datastore)
    return stats.get("finetune") or {"promoted": True}


def simulate(args, strategy_name: str, source: str, pool, val_test_ids, test_ids):
    """One annotation loop; returns ``[(labels used, test Dice, promoted)]``."""
    from lib.activelearning import ModelScorer, UncertaintyStrategy

    work = tempfile.mkdtemp(prefix=f"al_{strategy_name}_")
    store_dir, hidden = os.path.join(work, "store"), os.path.join(work, "hidden")
    shutil.copytree(source, store_dir)
    os.makedirs(hidden)
    datastore = _store(store_dir)
    keep = set(val_test_ids)
    rng = random.Random(args.seed)
    start = rng.sample(sorted(pool), args.start)
    for image in datastore.list_images():  # hide every training label but the start set; drop unused images
        label = datastore.get_label_by_image_id(image, "final")
        if image in keep or image in start:
            continue
        if image in pool and label:
            shutil.copy(datastore.get_label_uri(label, "final"), os.path.join(hidden, f"{image}.nii.gz"))
            datastore.remove_label(label, "final")
        elif image not in pool:
            datastore.remove_image(image)
    config = _build(args.task, os.path.join(work, "model"), {f"{args.task}_roi": args.roi})
    scorer = ModelScorer(SimpleNamespace(_infers={args.task: config.infer()}), samples=args.mc_samples)
    strategy = UncertaintyStrategy("epistemic", "segmentation", lambda: {args.task: ("segmentation", True)}, scorer)
    labelled = len(start)
    curve = []
    outcome = _train(config, datastore, args.epochs, finetune=False, run="r0", seed=args.seed)
    curve.append((labelled, _evaluate(config, datastore, test_ids), outcome["promoted"]))
    print(f"  {strategy_name}: {labelled} labels -> test Dice {curve[-1][1]:.4f}", flush=True)
    for round_ in range(1, args.rounds + 1):
        picks = []
        for _ in range(args.per_round):
            if strategy_name == "random":
                candidates = sorted(strategy.candidates(args.task, datastore))
                choice = rng.choice(candidates) if candidates else None
            else:
                scorer.app._infers[args.task] = config.infer()  # the newly served checkpoint
                choice = (strategy({"task": args.task}, datastore) or {}).get("id")
            if not choice:
                break
            picks.append(choice)
            datastore.save_label(choice, os.path.join(hidden, f"{choice}.nii.gz"), "final", {"task": args.task})
        labelled += len(picks)
        outcome = _train(config, datastore, args.epochs, finetune=True, run=f"r{round_}", seed=args.seed + round_)
        curve.append((labelled, _evaluate(config, datastore, test_ids), outcome["promoted"]))
        print(
            f"  {strategy_name}: {labelled} labels -> test Dice {curve[-1][1]:.4f} (promoted: {outcome['promoted']})",
            flush=True,
        )
    shutil.rmtree(work, ignore_errors=True)
    return curve


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "Task04_Hippocampus"))
    parser.add_argument("--studies", help="an existing Decathlon datastore (skips the import)")
    parser.add_argument("--task", default="hippocampus")
    parser.add_argument("--start", type=int, default=8, help="K: labelled cases at the start")
    parser.add_argument("--per-round", type=int, default=4, help="M: cases picked per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per (re)training")
    parser.add_argument("--pool", type=int, default=40, help="training cases the strategies may pick from")
    parser.add_argument("--test", type=int, default=20, help="test cases scored per evaluation")
    parser.add_argument("--roi", default="32,32,32")
    parser.add_argument("--mc-samples", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from mri_label.core.splits import ensure_split, split_of

    started = time.time()
    studies = args.studies
    if not studies:
        from mri_label.importers import import_dataset

        studies = os.path.join(tempfile.mkdtemp(prefix="al_bench_"), "store")
        import_dataset("decathlon", args.source, studies)
    split = ensure_split(studies)
    datastore = _store(studies)
    labelled = [i for i in datastore.list_images() if datastore.get_label_by_image_id(i, "final")]
    subject = lambda i: datastore.get_image_info(i).get("subject", i)  # noqa: E731
    by_side = {
        side: sorted(i for i in labelled if split_of(split, subject(i)) == side) for side in ("train", "val", "test")
    }
    rng = random.Random(args.seed)
    pool = set(rng.sample(by_side["train"], min(args.pool, len(by_side["train"]))))
    test_ids = sorted(rng.sample(by_side["test"], min(args.test, len(by_side["test"]))))
    val_test = set(by_side["val"]) | set(by_side["test"])
    print(
        f"{args.task}: pool {len(pool)} training cases, {len(by_side['val'])} validation, {len(test_ids)} test; "
        f"K={args.start}, M={args.per_round}, {args.rounds} rounds, {args.epochs} epochs each, seed {args.seed}",
        flush=True,
    )

    curves = {name: simulate(args, name, studies, pool, val_test, test_ids) for name in ("epistemic", "random")}

    # full-pool reference: every pool label, the same total epochs as a whole loop
    args_full = argparse.Namespace(
        **{**vars(args), "start": len(pool), "rounds": 0, "epochs": args.epochs * (args.rounds + 1)}
    )
    reference = simulate(args_full, "full", studies, pool, val_test, test_ids)[-1][1]

    target = 0.95 * reference
    print(f"\nfull pool ({len(pool)} labels): test Dice {reference:.4f}; 95 % = {target:.4f}")
    print(f"{'labels':>7} | {'epistemic':>9} | {'random':>9}")
    for (n, e, _), (_, r, _) in zip(curves["epistemic"], curves["random"]):
        print(f"{n:>7} | {e:>9.4f} | {r:>9.4f}")
    for name, curve in curves.items():
        reached = next((n for n, d, _ in curve if d >= target), None)
        print(
            f"{name}: labels to reach 95 % of full-pool Dice: "
            f"{reached if reached is not None else f'not within {curve[-1][0]}'}"
        )
    print(f"({time.time() - started:.0f} s)")
    print(json.dumps({"reference": reference, "curves": curves}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

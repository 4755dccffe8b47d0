"""Training throughput: samples/s and peak memory of one training epoch per task, with the app's own trainers.

    .venv/bin/python benchmarks/train_throughput.py [--tasks sequence,tumor_seg,...] [--images 48]
                                                    [--source generated|sample] [--dataset CacheDataset|Dataset]
                                                    [--json train.json] [--work DIR] [--timeout 1800] [--threads N]

Each task runs in its own process (so its peak memory is its own): the task's TaskConfig is built as the server
builds it (``discover_configs()[task]().init(task, model_dir, {}, None)``), its trainer is called once with
``{"max_epochs": 1, "early_stop_patience": 0, "dataset": ...}`` on a :class:`lib.datastore.MRIDatastore`, and an
ignite handler added to the trainer's handlers counts the samples of the epoch and takes ignite's own epoch time
(the iterations and their data loading; not the dataset caching before it, nor the validation after it, which
``run s`` includes together with checkpointing and the energy tracker).

Data (``--source generated``, the default, realistic sizes; the subject split is the datastore's ``split.json``,
70/15/15, so about 70 % of the items are trained on):

* ``--images`` (default 48) 256x256 8-bit PNG slices of synthetic heads in T1/T2/FLAIR, half with a tumor, with
  class labels for every classifier and tumor masks for ``tumor_seg`` on the FLAIR slices with a tumor;
* ``--images // 8`` FLAIR volumes of 256x256x30 (1 x 1 x 5 mm) with tumor masks (``tumor_gate`` learns per slice
  from them, ``tumor_seg`` trains on their tumor slices and as many healthy ones);
* ``--images // 3`` hippocampus crops of 35x51x35 at 1 mm (Decathlon size) with anterior/posterior labels.

``--source sample`` uses the small synthetic sample datastore (``mri-label sample-data``) instead.

Device: CUDA where present, with AMP (the trainers turn AMP on with CUDA) and ``torch.cuda.max_memory_allocated``
as the peak; on the CPU the peak is the process's RSS (``VmHWM``, and the sampled RSS of the process tree, for
data-loader workers). Prints one table: task, device, AMP, items, epoch s, samples/s, peak MB.
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "apps" / "mri_app"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import MemorySampler, format_table, synthetic_head, _affine, _save_nifti, _to_uint8  # noqa: E402

TASKS = ("sequence", "dementia_stage", "tumor_gate", "tumor_type", "tumor_seg", "hippocampus")
DEMENTIA = ("NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented")
TYPES = ("glioma", "meningioma", "pituitary")


def parse_tasks(value: str, known=TASKS) -> List[str]:
    """``all`` or a comma-separated list of task names -> the list, in the given order, without repeats."""
    names = [t.strip() for t in str(value).split(",") if t.strip()]
    if not names:
        raise ValueError("--tasks names no task")
    if "all" in names:
        return list(known)
    unknown = [t for t in names if t not in known]
    if unknown:
        raise ValueError(f"--tasks names unknown task(s) {unknown}; known: all, {', '.join(known)}")
    return list(dict.fromkeys(names))


def write_generated(dest: Path, images: int, seed: int = 0) -> Dict[str, int]:
    """A datastore at ``dest`` with the generated training data (see the module docstring)."""
    import numpy as np
    from monailabel.datastore.local import LocalDatastore
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from mri_label.sample_data import EXTENSIONS

    dest.mkdir(parents=True, exist_ok=True)
    store = LocalDatastore(str(dest), extensions=EXTENSIONS, auto_reload=False)
    tumor_info = {"task": "tumor_seg", "label_info": [{"name": "tumor", "idx": 1}], "synthetic": True}
    hippo_info = {"task": "hippocampus", "label_info": [{"name": "anterior", "idx": 1}, {"name": "posterior", "idx": 2}],
                  "synthetic": True}
    counts = {"slices": 0, "volumes": 0, "crops": 0}

    def labels(**tasks):
        return {t: {"label": v, "source": "synthetic"} for t, v in tasks.items() if v is not None}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in range(images):
            contrast = ("T1", "T2", "FLAIR")[i % 3]
            tumor = (i // 3) % 2 == 0
            image, mask, _ = synthetic_head((256, 256, 1), (0.9, 0.9, 1.0), contrast, seed + 1000 + i, tumor=tumor,
                                            z_offset_mm=float(10 + (i * 7) % 25), with_labels=True)
            path = tmp / "slice.png"
            Image.fromarray(_to_uint8(image[:, :, 0].T[::-1]), "L").save(path)
            kind = TYPES[i % 3] if tumor else "no_tumor"
            info = {"subject": f"s{i:03d}", "synthetic": True, "class_labels": labels(
                sequence=contrast, dementia_stage=DEMENTIA[i % 4], tumor_gate="tumor" if tumor else "no_tumor", tumor_type=kind)}
            image_id = f"slice{i:03d}"
            store.add_image(image_id, str(path), info)
            if tumor and contrast == "FLAIR" and mask.any():
                Image.fromarray(mask[:, :, 0].T[::-1].copy(), "L").save(tmp / "mask.png")
                store.save_label(image_id, str(tmp / "mask.png"), "final", dict(tumor_info))
            counts["slices"] += 1
        shape, spacing = (256, 256, 30), (1.0, 1.0, 5.0)
        for i in range(max(2, images // 8)):
            image, mask, _ = synthetic_head(shape, spacing, "FLAIR", seed + 2000 + i, tumor=True, with_labels=True)
            _save_nifti(np.round(image).astype(np.int16), _affine(shape, spacing), tmp / "vol.nii.gz")
            _save_nifti(mask, _affine(shape, spacing), tmp / "volmask.nii.gz")
            image_id = f"flair{i:02d}"
            store.add_image(image_id, str(tmp / "vol.nii.gz"), {"subject": f"v{i:02d}", "synthetic": True, "class_labels": labels(
                sequence="FLAIR", tumor_gate="tumor", tumor_type=TYPES[i % 3])})
            store.save_label(image_id, str(tmp / "volmask.nii.gz"), "final", dict(tumor_info))
            counts["volumes"] += 1
        crop, spacing = (35, 51, 35), (1.0, 1.0, 1.0)
        rng = np.random.default_rng(seed)
        for i in range(max(2, images // 3)):
            centre = (-28 + rng.uniform(-3, 3), -18 + rng.uniform(-3, 3), -20 + rng.uniform(-3, 3))
            image, _, hippo = synthetic_head(crop, spacing, "T1", seed + 3000 + i, tumor=False, centre_mm=centre, with_labels=True)
            _save_nifti(np.round(image).astype(np.int16), _affine(crop, spacing), tmp / "crop.nii.gz")
            _save_nifti(hippo, _affine(crop, spacing), tmp / "cropmask.nii.gz")
            image_id = f"hippo{i:02d}"
            store.add_image(image_id, str(tmp / "crop.nii.gz"), {"subject": f"h{i:02d}", "synthetic": True, "class_labels": labels(
                sequence="T1", dementia_stage=DEMENTIA[i % 4])})
            store.save_label(image_id, str(tmp / "cropmask.nii.gz"), "final", dict(hippo_info))
            counts["crops"] += 1
    return counts


# ----------------------------------------------------------------------------------------- the worker (one task)


class EpochMeter:
    """Ignite handler: samples seen and ignite's own time of each epoch (``engine.state.times``)."""

    def __init__(self):
        self.samples, self.iterations, self.epochs, self.epoch_cpu = 0, 0, [], []
        self.first_iteration_s = None
        self._started = self._cpu_started = self._cpu_last = None

    def attach(self, engine):
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _epoch_started(self, engine):
        self._started = time.perf_counter()
        self._cpu_started = time.process_time()

    def _iteration(self, engine):
        batch = engine.state.batch
        if isinstance(batch, dict):
            image = batch.get("image")
            self.samples += int(image.shape[0]) if hasattr(image, "shape") else len(image)
        else:
            self.samples += len(batch)
        self.iterations += 1
        self._cpu_last = time.process_time()
        if self.first_iteration_s is None:
            self.first_iteration_s = time.perf_counter() - self._started

    def _epoch_completed(self, engine):
        ignite = (engine.state.times or {}).get("EPOCH_COMPLETED")
        self.epochs.append(float(ignite) if ignite else time.perf_counter() - self._started)
        self.epoch_cpu.append((self._cpu_last or self._cpu_started) - self._cpu_started)  # to the last iteration: no validation


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def worker(task: str, studies: Path, model_dir: Path, dataset: str, out: Path) -> None:
    """Run one epoch of ``task`` and write its numbers to ``out`` (JSON)."""
    import torch

    sys.path[:0] = [str(APP_DIR), str(ROOT)]
    from monailabel.config import settings

    from lib.datastore import MRIDatastore
    from main import discover_configs

    config = discover_configs()[task]()
    config.init(task, str(model_dir), {}, None)
    trainer = config.trainer()
    meter = EpochMeter()
    handlers = trainer.train_handlers
    trainer.train_handlers = lambda context: list(handlers(context)) + [meter]
    datastore = MRIDatastore(str(studies), extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT, auto_reload=False)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    request = {"name": "throughput", "max_epochs": 1, "early_stop_patience": 0, "dataset": dataset, "tracking": "None",
               "device": "cuda" if cuda else "cpu"}
    started = time.perf_counter()
    trainer(request, datastore)
    run_s = time.perf_counter() - started
    epoch_s = meter.epochs[0] if meter.epochs else None
    result = {
        "task": task, "device": torch.cuda.get_device_name(0) if cuda else "cpu", "amp": bool(getattr(trainer, "_amp", False)),
        "torch_threads": torch.get_num_threads(), "dataset": dataset, "samples": meter.samples, "iterations": meter.iterations,
        "epoch_s": epoch_s, "epoch_cpu_s": meter.epoch_cpu[0] if meter.epoch_cpu else None,
        "first_iteration_s": meter.first_iteration_s, "run_s": run_s,
        "samples_per_s": (meter.samples / epoch_s) if epoch_s else None,
        "vm_hwm_mb": vm_hwm_mb(), "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }
    out.write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------------------ driver


def run_task(task: str, studies: Path, work: Path, dataset: str, timeout: float, threads=None) -> Dict:
    out = work / f"{task}.json"
    log = work / f"{task}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", task, "--studies", str(studies),
               "--model-dir", str(work / "model"), "--dataset", dataset, "--out", str(out)]
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        sampler = MemorySampler(process.pid)
        sampler.start()
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
            code = "timeout"
        finally:
            sampler.stop()
    if code != 0 or not out.exists():
        tail = log.read_text()[-1500:] if log.exists() else ""
        return {"task": task, "error": f"exit {code}", "log": str(log), "tail": tail}
    result = json.loads(out.read_text())
    result["tree_rss_peak_mb"] = sampler.peak_mb
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="all", help=f"comma-separated tasks or all (default): {', '.join(TASKS)}")
    parser.add_argument("--images", type=int, default=48, help="generated PNG slices (volumes: /8, crops: /3); 6..2000")
    parser.add_argument("--source", choices=("generated", "sample"), default="generated")
    parser.add_argument("--dataset", choices=("CacheDataset", "Dataset"), default="CacheDataset",
                        help="MONAI Label dataset type (CacheDataset, the app's default, loads and pre-processes before "
                        "the epoch; Dataset inside it)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    parser.add_argument("--work", type=Path, help="keep data, runs and logs here (default: a temporary folder)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per task (default 1800)")
    parser.add_argument("--threads", type=int, help="torch threads of each training process (OMP_NUM_THREADS; default: "
                        "torch's own choice)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--studies", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.studies, args.model_dir, args.dataset, args.out)
        return 0
    try:
        tasks = parse_tasks(args.tasks)
    except ValueError as error:
        parser.error(str(error))
    if not 6 <= args.images <= 2000:
        parser.error(f"--images must lie in 6..2000, got {args.images}")
    if not 10 <= args.timeout <= 7200:
        parser.error(f"--timeout must lie in 10..7200 s, got {args.timeout}")
    if args.threads is not None and not 1 <= args.threads <= 256:
        parser.error(f"--threads must lie in 1..256, got {args.threads}")

    rows, results = [], []
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mri-train-")))
        work.mkdir(parents=True, exist_ok=True)
        studies = work / "studies"
        shutil.rmtree(studies, ignore_errors=True)
        shutil.rmtree(work / "model", ignore_errors=True)
        started = time.perf_counter()
        if args.source == "sample":
            sys.path.insert(0, str(ROOT))
            from mri_label.sample_data import write_sample_data

            described = write_sample_data(studies)
        else:
            described = write_generated(studies, args.images)
        print(f"data ({args.source}) written in {time.perf_counter() - started:.1f} s: {described}")
        load_before = os.getloadavg()
        for task in tasks:
            print(f"  {task} ...", flush=True)
            result = run_task(task, studies, work, args.dataset, args.timeout, args.threads)
            results.append(result)
            if "error" in result:
                print(f"  {task} failed ({result['error']}); log {result['log']}:\n{result['tail']}")
                rows.append([task, "-", "-", None, None, None, None, None, None, result["error"]])
                continue
            peak = result["cuda_peak_mb"] if result["cuda_peak_mb"] is not None else max(result["vm_hwm_mb"], result["tree_rss_peak_mb"])
            rows.append([task, result["device"], result["amp"], result["samples"], result["epoch_s"], result["samples_per_s"],
                         peak, result["epoch_cpu_s"], result["run_s"], ""])
        load_after = os.getloadavg()
    print()
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (above ~0.5 the times are upper bounds); "
          f"dataset {args.dataset}; one epoch each")
    print(format_table(["task", "device", "AMP", "items", "epoch s", "samples/s", "peak MB", "epoch cpu s", "run s", "note"], rows,
                       [False, False, False, True, True, True, True, True, True, False]))
    print("items: samples trained in the epoch (3D: patches); peak MB: CUDA max_memory_allocated on a GPU, else the "
          "process's peak RSS; epoch cpu s: CPU time of the training process over the epoch's iterations (all threads; "
          "steadier than wall time on a shared machine); run s: the whole trainer call (caching, validation, "
          "checkpoints, energy tracker)")
    if args.json:
        args.json.write_text(json.dumps({"source": args.source, "dataset": args.dataset, "images": args.images,
                                         "load_before": load_before, "load_after": load_after, "results": results}, indent=1))
        print(f"numbers written to {args.json}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

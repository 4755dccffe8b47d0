"""Training throughput before and after: seconds to the first epoch, samples/s and peak memory of one training epoch
per task, with the app's own trainers, of this checkout and optionally of another commit (``--ref``).

    .venv/bin/python benchmarks/train_throughput.py [--tasks sequence,tumor_seg,...] [--images 48]
                                                    [--source generated|sample] [--dataset CacheDataset|Dataset]
                                                    [--ref CHECKOUT] [--json train.json] [--work DIR]
                                                    [--timeout 1800] [--threads N]

    # before/after a change: a checkout of the old commit beside this one (git worktree add does not touch this one)
    git worktree add /tmp/ref 7851caa
    nice -n 19 .venv/bin/python benchmarks/train_throughput.py --ref /tmp/ref --json train.json

Each run is its own process (so its peak memory is its own) started with the checkout under test first on
``PYTHONPATH`` and ``sys.path`` (``<checkout>/apps/mri_app`` for ``lib.*`` and ``main``, ``<checkout>`` for
``mri_label``; the process checks that all three come from there, ahead of the venv's editable install): the task's
TaskConfig is built as the server builds it (``discover_configs()[task]().init(task, model_dir, {}, None)``), its
trainer is called once with ``{"max_epochs": 1, "early_stop_patience": 0, "dataset": ...}`` on a
:class:`lib.datastore.MRIDatastore` in a fresh model folder, and an ignite handler added to the trainer's handlers

* takes the wall time from the trainer call to the start of the first training iteration (ignite's
  ``ITERATION_STARTED``, after its batch is loaded): **first epoch s**, which holds item discovery, the slice-cache
  build (:mod:`lib.slice_cache`, since commit 2b5a709), the dataset caching and the data loader's first batch;
* counts the samples of the epoch and takes ignite's own epoch time (the iterations and their data loading; not the
  dataset caching before it, nor the validation after it, which ``run s`` includes together with checkpointing and
  the energy tracker), and the torch thread count the training runs with (the trainer may set it itself).

The slice tasks (the classifiers and ``tumor_seg``) run twice on the same datastore: ``cold``, with the datastore's
slice cache (``<datastore>/.mri-label-cache``) deleted first, then ``warm``, with what the cold run left there;
``hippocampus`` (3D) runs once (``-``), after deleting the cache too. The ``slice cache`` column says what each run
did to the cache: ``built N`` (new ``.npy`` files), ``found N`` (files there before the run and left unchanged; an
entry not found is rewritten), ``none`` (no cache: the code before it). Each side (``before``: ``--ref``; ``after``:
this checkout) gets its own copy of the same generated datastore, and the runs go task by task, before then after,
so that both sides of a task see about the same machine load; the 1-minute load average at the start and end of
each run is printed beside it (above about half a core per core the times are upper bounds).

Data (``--source generated``, the default, realistic sizes; the subject split is the datastore's ``split.json``,
70/15/15, so about 70 % of the items are trained on):

* ``--images`` (default 48) 256x256 8-bit PNG slices of synthetic heads in the contrasts t1, t2 and flair (series
  ids; their sequence classes are the sequence config's), half with a tumor, with class labels for every classifier
  and tumor masks for ``tumor_seg`` on the slices with a tumor of the series it reads (its ``input_series``);
* ``--images // 8`` volumes of that series, 256x256x30 (1 x 1 x 5 mm), with tumor masks (``tumor_gate`` learns per
  slice from them, ``tumor_seg`` trains on their tumor slices and as many healthy ones);
* ``--images // 3`` hippocampus crops of 35x51x35 at 1 mm (Decathlon size) with the hippocampus task's labels.

Every class name and label comes from the task configs (:mod:`mri_label.tasks`).

``--source sample`` uses the small synthetic sample datastore (``mri-label sample-data``) instead.

Device: CUDA where present, with AMP (the trainers turn AMP on with CUDA) and ``torch.cuda.max_memory_allocated``
as the peak; on the CPU the peak is the process's RSS (``VmHWM``, and the sampled RSS of the process tree, for
data-loader workers). Prints one table, a row per run: code (before/after and its commit), task, cache (cold/warm),
device, AMP, threads, items, first epoch s, epoch s, samples/s, peak MB, epoch cpu s, run s, load start/end, slice
cache, and on the after rows the ratios to the before row of the same task and cache: samples/s after/before and
first epoch s before/after (above 1: faster).
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
from typing import Dict, List, Optional, Sequence, Tuple, Union, cast

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "apps" / "mri_app"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import MemorySampler, _affine, _save_nifti, _to_uint8, format_table, synthetic_head  # noqa: E402

TASKS = ("sequence", "dementia_stage", "tumor_gate", "tumor_type", "tumor_seg", "hippocampus")
#: the series ids of the generated slices' contrasts (:func:`latency.synthetic_head`), in turn
CONTRASTS = ("t1", "t2", "flair")


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
    from mri_label import tasks as registry
    from mri_label.sample_data import EXTENSIONS

    dest.mkdir(parents=True, exist_ok=True)
    store = LocalDatastore(str(dest), extensions=EXTENSIONS, auto_reload=False)
    tumor_info = {**registry.label_info("tumor_seg"), "synthetic": True}
    hippo_info = {**registry.label_info("hippocampus"), "synthetic": True}
    tumor_series, hippo_series = registry.series_read_by("tumor_seg"), registry.series_read_by("hippocampus")
    stages, types = registry.classes("dementia_stage"), registry.positive_classes("tumor_type")
    counts = {"slices": 0, "volumes": 0, "crops": 0}

    def labels(**tasks):
        return {t: {"label": v, "source": "synthetic"} for t, v in tasks.items() if v is not None}

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for i in range(images):
            series = CONTRASTS[i % 3]
            tumor = (i // 3) % 2 == 0
            image, mask, _ = synthetic_head(
                (256, 256, 1),
                (0.9, 0.9, 1.0),
                series,
                seed + 1000 + i,
                tumor=tumor,
                z_offset_mm=float(10 + (i * 7) % 25),
                with_labels=True,
            )
            path = tmp / "slice.png"
            Image.fromarray(_to_uint8(image[:, :, 0].T[::-1]), "L").save(path)
            kind = types[i % len(types)] if tumor else registry.negative_class("tumor_type")
            info = {
                "subject": f"s{i:03d}",
                "synthetic": True,
                "class_labels": labels(
                    sequence=registry.series_class(series),
                    dementia_stage=stages[i % len(stages)],
                    tumor_gate=registry.finding_class("tumor_gate", tumor),
                    tumor_type=kind,
                ),
            }
            image_id = f"slice{i:03d}"
            store.add_image(image_id, str(path), info)
            if tumor and series == tumor_series and mask.any():
                Image.fromarray(mask[:, :, 0].T[::-1].copy(), "L").save(tmp / "mask.png")
                store.save_label(image_id, str(tmp / "mask.png"), "final", dict(tumor_info))
            counts["slices"] += 1
        shape, spacing = (256, 256, 30), (1.0, 1.0, 5.0)
        for i in range(max(2, images // 8)):
            image, mask, _ = synthetic_head(shape, spacing, tumor_series, seed + 2000 + i, tumor=True, with_labels=True)
            _save_nifti(np.round(image).astype(np.int16), _affine(shape, spacing), tmp / "vol.nii.gz")
            _save_nifti(mask, _affine(shape, spacing), tmp / "volmask.nii.gz")
            image_id = f"flair{i:02d}"
            store.add_image(
                image_id,
                str(tmp / "vol.nii.gz"),
                {
                    "subject": f"v{i:02d}",
                    "synthetic": True,
                    "class_labels": labels(
                        sequence=registry.series_class(tumor_series),
                        tumor_gate=registry.finding_class("tumor_gate", True),
                        tumor_type=types[i % len(types)],
                    ),
                },
            )
            store.save_label(image_id, str(tmp / "volmask.nii.gz"), "final", dict(tumor_info))
            counts["volumes"] += 1
        crop, spacing = (35, 51, 35), (1.0, 1.0, 1.0)
        rng = np.random.default_rng(seed)
        for i in range(max(2, images // 3)):
            centre = (-28 + rng.uniform(-3, 3), -18 + rng.uniform(-3, 3), -20 + rng.uniform(-3, 3))
            image, _, hippo = synthetic_head(
                crop, spacing, hippo_series, seed + 3000 + i, tumor=False, centre_mm=centre, with_labels=True
            )
            _save_nifti(np.round(image).astype(np.int16), _affine(crop, spacing), tmp / "crop.nii.gz")
            _save_nifti(hippo, _affine(crop, spacing), tmp / "cropmask.nii.gz")
            image_id = f"hippo{i:02d}"
            store.add_image(
                image_id,
                str(tmp / "crop.nii.gz"),
                {
                    "subject": f"h{i:02d}",
                    "synthetic": True,
                    "class_labels": labels(
                        sequence=registry.series_class(hippo_series), dementia_stage=stages[i % len(stages)]
                    ),
                },
            )
            store.save_label(image_id, str(tmp / "cropmask.nii.gz"), "final", dict(hippo_info))
            counts["crops"] += 1
    return counts


# ----------------------------------------------------------------------------------------- the worker (one run)

SLICE_TASKS = ("sequence", "dementia_stage", "tumor_gate", "tumor_type", "tumor_seg")
"""Tasks trained on 2D slices (from the slice cache since commit 2b5a709): run cold and warm."""

CACHE_DIR = ".mri-label-cache"
"""The datastore's cache folder (``lib.slice_cache.CACHE_FOLDER`` is ``<CACHE_DIR>/slices``)."""

APP_MODULES = ("lib", "main", "mri_label")
"""What the worker imports from the checkout under test."""


def phases(task: str) -> List[str]:
    """The runs of ``task`` on one datastore: ``cold`` then ``warm`` for a slice task, else one (``-``)."""
    return ["cold", "warm"] if task in SLICE_TASKS else ["-"]


def app_paths(root) -> List[str]:
    """``sys.path`` entries of a checkout, first first: its app (``lib``, ``main``) and its root (``mri_label``)."""
    root = Path(root).resolve()
    return [str(root / "apps" / "mri_app"), str(root)]


def child_env(root, threads: Optional[int] = None, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment of a worker benchmarking the checkout at ``root``: its paths first on ``PYTHONPATH`` (for any
    process the training starts), ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` from ``threads`` where given."""
    env = dict(os.environ if base is None else base)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in app_paths(root)]
    env["PYTHONPATH"] = os.pathsep.join(app_paths(root) + rest)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def import_app(root) -> Dict[str, str]:
    """Put the checkout at ``root`` first on ``sys.path`` and import :data:`APP_MODULES` from it.

    Returns:
        ``{module: file}``.

    Raises:
        RuntimeError: a module was imported before (from wherever), or resolves outside ``root`` (e.g. ``mri_label``
            from the venv's editable install of another checkout).
    """
    import importlib

    root = Path(root).resolve()
    early = [m for m in APP_MODULES if m in sys.modules]
    if early:
        raise RuntimeError(f"{early} imported before the checkout {root} was put on sys.path")
    sys.path[:0] = app_paths(root)
    files = {}
    for name in APP_MODULES:
        path = Path(cast(str, importlib.import_module(name).__file__)).resolve()  # modules, not namespaces
        if root not in path.parents:
            raise RuntimeError(f"{name} imported from {path}, not from the checkout {root}")
        files[name] = str(path)
    return files


class EpochMeter:
    """Ignite handler: samples seen and ignite's own time of each epoch (``engine.state.times``), and the moment the
    first iteration started (``time.perf_counter``) with the torch thread count then."""

    def __init__(self):
        self.samples, self.iterations, self.epochs, self.epoch_cpu = 0, 0, [], []
        self.first_iteration_s = None
        self.first_iteration_at = None
        self.torch_threads = None
        self._started = self._cpu_started = self._cpu_last = None

    def attach(self, engine):
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_STARTED, self._iteration_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _epoch_started(self, engine):
        self._started = time.perf_counter()
        self._cpu_started = time.process_time()

    def _iteration_started(self, engine):
        if self.first_iteration_at is None:
            import torch

            self.first_iteration_at = time.perf_counter()
            self.torch_threads = torch.get_num_threads()

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
        # to the last iteration: no validation
        self.epoch_cpu.append((self._cpu_last or self._cpu_started) - self._cpu_started)


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def worker(task: str, studies: Path, model_dir: Path, dataset: str, out: Path, app_root: Path = ROOT) -> None:
    """Run one epoch of ``task`` with the app of the checkout at ``app_root`` and write its numbers to ``out``."""
    files = import_app(app_root)
    import torch
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
    request = {
        "name": "throughput",
        "max_epochs": 1,
        "early_stop_patience": 0,
        "dataset": dataset,
        "tracking": "None",
        "device": "cuda" if cuda else "cpu",
    }
    started = time.perf_counter()
    trainer(request, datastore)
    run_s = time.perf_counter() - started
    epoch_s = meter.epochs[0] if meter.epochs else None
    result = {
        "task": task,
        "app_root": str(Path(app_root).resolve()),
        "modules": files,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "amp": bool(getattr(trainer, "_amp", False)),
        "torch_threads": meter.torch_threads if meter.torch_threads is not None else torch.get_num_threads(),
        "dataset": dataset,
        "samples": meter.samples,
        "iterations": meter.iterations,
        "first_epoch_s": (meter.first_iteration_at - started) if meter.first_iteration_at is not None else None,
        "epoch_s": epoch_s,
        "epoch_cpu_s": meter.epoch_cpu[0] if meter.epoch_cpu else None,
        "first_iteration_s": meter.first_iteration_s,
        "run_s": run_s,
        "samples_per_s": (meter.samples / epoch_s) if epoch_s else None,
        "vm_hwm_mb": vm_hwm_mb(),
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }
    out.write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------------------ driver


def cache_snapshot(studies: Path) -> Dict[str, Tuple[int, int]]:
    """The finished cache files under ``<studies>/.mri-label-cache``: relative path -> (inode, mtime_ns)."""
    folder = Path(studies) / CACHE_DIR
    snapshot = {}
    for path in sorted(folder.rglob("*.npy")) if folder.is_dir() else []:
        if not path.name.endswith(".partial.npy"):
            stat = path.stat()
            snapshot[str(path.relative_to(folder))] = (stat.st_ino, stat.st_mtime_ns)
    return snapshot


def cache_change(before: Dict, after: Dict) -> Dict[str, int]:
    """What a run did to the cache: ``files`` there before and ``after``, ``built`` (new or rewritten) and ``found``
    (there before and unchanged)."""
    found = sum(1 for name, stamp in after.items() if before.get(name) == stamp)
    return {"before": len(before), "after": len(after), "found": found, "built": len(after) - found}


def cache_cell(change: Optional[Dict]) -> Optional[str]:
    """The ``slice cache`` cell: ``built N``, ``found N``, ``found N, built M``, or ``none``."""
    if not change:
        return None
    if not change["after"]:
        return "none"
    parts = ([f"found {change['found']}"] if change["found"] else []) + (
        [f"built {change['built']}"] if change["built"] else []
    )
    return ", ".join(parts)


def load_cell(start: Optional[Sequence[float]], end: Optional[Sequence[float]]) -> Optional[str]:
    """1-minute load averages at the start and end of a run: ``"4.6/4.8"``."""
    if not start or not end:
        return None
    return f"{start[0]:.1f}/{end[0]:.1f}"


def git_commit(root: Path) -> str:
    """Short commit of the checkout at ``root``, ``+`` where its app or ``mri_label`` differ from it; ``?`` without
    git."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=30
        )
        if head.returncode != 0:
            return "?"
        dirty = (
            subprocess.run(
                ["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", "apps/mri_app", "mri_label"],
                capture_output=True,
                timeout=60,
            ).returncode
            == 1
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return head.stdout.strip() + ("+" if dirty else "")


def check_ref(value) -> Path:
    """``--ref``: a checkout of this repository (``apps/mri_app/main.py``, ``apps/mri_app/lib``, ``mri_label``)."""
    path = Path(str(value)).expanduser()
    if not str(value).strip() or not path.is_dir():
        raise ValueError(f"--ref must be a checkout folder of mri-label, got {str(value)!r} (not a folder)")
    missing = [
        p
        for p in ("apps/mri_app/main.py", "apps/mri_app/lib/__init__.py", "mri_label/__init__.py")
        if not (path / p).is_file()
    ]
    if missing:
        raise ValueError(f"--ref must be a checkout folder of mri-label, got {str(value)!r} (no {', '.join(missing)})")
    return path.resolve()


def check_range(name: str, value, low, high, unit: str = ""):
    """``value`` if ``low <= value <= high``, else ValueError naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must lie in {low}..{high}{unit}, got {value!r}")
    return value


def run_task(
    task: str,
    studies: Path,
    run_dir: Path,
    dataset: str,
    timeout: float,
    threads=None,
    app_root: Path = ROOT,
    phase: str = "-",
) -> Dict:
    """One worker run of ``task`` on ``studies`` with the checkout ``app_root``; its numbers, the load average at its
    start and end, and what it did to the slice cache (see :func:`cache_change`)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    out, log = run_dir / "result.json", run_dir / "run.log"
    for stale in (out, log):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    shutil.rmtree(run_dir / "model", ignore_errors=True)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        task,
        "--studies",
        str(studies),
        "--model-dir",
        str(run_dir / "model"),
        "--dataset",
        dataset,
        "--out",
        str(out),
        "--app-root",
        str(app_root),
    ]
    cache_before = cache_snapshot(studies)
    load_start = os.getloadavg()
    with open(log, "w") as handle:
        process = subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=child_env(app_root, threads),
            cwd=str(run_dir),
        )
        sampler = MemorySampler(process.pid)
        sampler.start()
        code: Union[int, str]
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
            code = "timeout"
        finally:
            sampler.stop()
    load_end = os.getloadavg()
    run = {
        "task": task,
        "phase": phase,
        "load_start": list(load_start),
        "load_end": list(load_end),
        "cache": cache_change(cache_before, cache_snapshot(studies)),
    }
    if code != 0 or not out.exists():
        tail = log.read_text()[-1500:] if log.exists() else ""
        return dict(run, error=f"exit {code}", log=str(log), tail=tail)
    result = json.loads(out.read_text())
    result.update(run, tree_rss_peak_mb=sampler.peak_mb)
    return result


HEADERS = [
    "code",
    "task",
    "cache",
    "device",
    "AMP",
    "threads",
    "items",
    "first epoch s",
    "epoch s",
    "samples/s",
    "peak MB",
    "epoch cpu s",
    "run s",
    "load start/end",
    "slice cache",
    "x samples/s",
    "x first epoch",
    "note",
]
RIGHT = [
    False,
    False,
    False,
    False,
    False,
    True,
    True,
    True,
    True,
    True,
    True,
    True,
    True,
    True,
    False,
    True,
    True,
    False,
]


def _ratio(numerator, denominator) -> Optional[float]:
    return numerator / denominator if numerator and denominator else None


def table_rows(results: Sequence[Dict]) -> List[List]:
    """One row of :data:`HEADERS` per run result (``side`` ``before``/``after``, ``commit``, ``task``, ``phase`` and
    the worker's numbers, or ``error``); an after row carries its ratios to the before row of its task and phase."""
    before = {(r["task"], r["phase"]): r for r in results if r.get("side") == "before" and "error" not in r}
    rows = []
    for r in results:
        code = f"{r.get('side', 'after')} {r.get('commit', '?')}"
        load, cache = load_cell(r.get("load_start"), r.get("load_end")), cache_cell(r.get("cache"))
        if "error" in r:
            rows.append(
                [
                    code,
                    r["task"],
                    r["phase"],
                    "-",
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    load,
                    cache,
                    None,
                    None,
                    r["error"],
                ]
            )
            continue
        peak = (
            r["cuda_peak_mb"]
            if r.get("cuda_peak_mb") is not None
            else max(r["vm_hwm_mb"], r.get("tree_rss_peak_mb") or 0.0)
        )
        ref = before.get((r["task"], r["phase"])) if r.get("side") == "after" else None
        speed = _ratio(r["samples_per_s"], ref["samples_per_s"]) if ref else None
        first = _ratio(ref["first_epoch_s"], r["first_epoch_s"]) if ref else None
        rows.append(
            [
                code,
                r["task"],
                r["phase"],
                r["device"],
                r["amp"],
                r["torch_threads"],
                r["samples"],
                r["first_epoch_s"],
                r["epoch_s"],
                r["samples_per_s"],
                peak,
                r["epoch_cpu_s"],
                r["run_s"],
                load,
                cache,
                speed,
                first,
                "",
            ]
        )
    return rows


def format_results(results: Sequence[Dict]) -> str:
    """The printed table of :func:`table_rows`."""
    return format_table(HEADERS, table_rows(results), RIGHT)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; ValueError (naming the parameter and its value) for values out of range."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        return args
    args.tasks = parse_tasks(args.tasks)
    check_range("--images", args.images, 6, 2000)
    check_range("--timeout", args.timeout, 10, 7200, " s")
    if args.threads is not None:
        check_range("--threads", args.threads, 1, 256)
    if args.ref is not None:
        args.ref = check_ref(args.ref)
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default="all", help=f"comma-separated tasks or all (default): {', '.join(TASKS)}")
    parser.add_argument("--images", type=int, default=48, help="generated PNG slices (volumes: /8, crops: /3); 6..2000")
    parser.add_argument("--source", choices=("generated", "sample"), default="generated")
    parser.add_argument(
        "--dataset",
        choices=("CacheDataset", "Dataset"),
        default="CacheDataset",
        help="MONAI Label dataset type (CacheDataset, the app's default, loads and pre-processes before "
        "the epoch; Dataset inside it)",
    )
    parser.add_argument(
        "--ref",
        help="a checkout of another commit of this repository (e.g. git worktree add /tmp/ref "
        "7851caa) whose app is benchmarked the same way, on the same data: its rows are 'before'",
    )
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    parser.add_argument("--work", type=Path, help="keep data, runs and logs here (default: a temporary folder)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run (default 1800)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads of each training process (OMP_NUM_THREADS; default: the trainer's own choice)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--studies", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--app-root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
    except ValueError as error:
        build_parser().error(str(error))
    if args.worker:
        worker(args.worker, args.studies, args.model_dir, args.dataset, args.out, args.app_root)
        return 0

    sides = ([("before", args.ref)] if args.ref else []) + [("after", ROOT)]
    commits = {name: git_commit(root) for name, root in sides}
    results = []
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mri-train-")))
        work.mkdir(parents=True, exist_ok=True)
        data = work / "data"
        for stale in [data] + [work / name for name, _ in sides]:
            shutil.rmtree(stale, ignore_errors=True)
        started = time.perf_counter()
        if args.source == "sample":
            if str(ROOT) not in sys.path:
                sys.path.insert(0, str(ROOT))
            from mri_label.sample_data import write_sample_data

            described = write_sample_data(data)
        else:
            described = write_generated(data, args.images)
        for name, _ in sides:  # the same data for each side; each its own cache
            shutil.copytree(data, work / name / "studies", symlinks=True)
        print(f"data ({args.source}) written in {time.perf_counter() - started:.1f} s: {described}")
        for task in args.tasks:
            for name, root in sides:
                studies = work / name / "studies"
                shutil.rmtree(studies / CACHE_DIR, ignore_errors=True)  # each task starts cold
                for phase in phases(task):
                    print(f"  {task} {phase} ({name} {commits[name]}: {root}) ...", flush=True)
                    result = run_task(
                        task,
                        studies,
                        work / name / "runs" / f"{task}-{phase.strip('-') or 'once'}",
                        args.dataset,
                        args.timeout,
                        args.threads,
                        root,
                        phase,
                    )
                    result.update(side=name, commit=commits[name], root=str(root))
                    results.append(result)
                    if "error" in result:
                        print(
                            f"  {task} {phase} ({name}) failed ({result['error']}); log "
                            f"{result['log']}:\n{result['tail']}"
                        )
    print()
    print(
        f"dataset {args.dataset}; one epoch per run; "
        + "; ".join(f"{name}: {root} at {commits[name]}" for name, root in sides)
    )
    print(format_results(results))
    print(
        "items: samples trained in the epoch (3D: patches); first epoch s: trainer call to the start of the first "
        "training iteration (items, slice cache, dataset caching, first batch); peak MB: CUDA max_memory_allocated on "
        "a GPU, else the process's peak RSS; epoch cpu s: CPU time of the training process over the epoch's "
        "iterations (all threads; steadier than wall time on a shared machine); run s: the whole trainer call "
        "(caching, validation, checkpoints, energy tracker); load start/end: 1-minute load average (above ~0.5 per "
        "core the times are upper bounds); x samples/s: after/before, x first epoch: before/after (above 1: faster)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "source": args.source,
                    "dataset": args.dataset,
                    "images": args.images,
                    "sides": [{"side": n, "root": str(r), "commit": commits[n]} for n, r in sides],
                    "results": results,
                },
                indent=1,
            )
        )
        print(f"numbers written to {args.json}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Load: concurrent clients against the real server while a training runs (loopback only, bounded clients and
duration); every uploaded label and class label is checked in the datastore afterwards.

    .venv/bin/python benchmarks/load.py [--clients 4] [--duration 60] [--train-task tumor_gate] [--train-epochs 100]
                                        [--train-wait 0] [--timeout 300] [--threads N] [--json load.json]
                                        [--work DIR]

What it does, in one run on one machine:

1. Writes the synthetic sample datastore (``mri_label.sample_data``) into a temporary folder and starts
   ``monailabel start_server`` on it on a free 127.0.0.1 port (``benchmarks/latency.py``'s ``server``), serving
   the shipped checkpoints (``apps/mri_app/shipped``) with a model folder in the temporary folder.
2. Starts a training (``POST /train/<--train-task>``, ``--train-epochs`` epochs, one process) and waits until it
   runs. A monitor polls ``GET /train/`` every second through the load window.
3. Runs ``--clients`` threads for ``--duration`` seconds; each loops over a mix (its own starting point):
   infers on every task (``sequence`` on a slice and a volume, ``tumor_gate``, ``tumor_type`` and
   ``dementia_stage`` with ``output=json``; ``tumor_seg``, ``hippocampus`` and ``tumor_pipeline`` with
   ``output=all``), segmentation label uploads (``PUT /datastore/label?image=ID&tag=final``; every upload has
   distinct content: its serial number is written in binary into the label's first row, beside a random box)
   and class-label corrections (``PUT /classlabel/<task>?image=ID``), on images the infers and the training
   also use. Clients share the upload targets, so uploads to one image overlap.
   Beside them (unless ``--no-slow-routes``), one more thread loops over the slow routes that run on worker
   threads: ``POST /activelearning/entropy`` and ``/epistemic`` (a model on every candidate, the infer lock taken
   per image), ``GET /datastore/dataset`` (the labelled data as a ZIP) and ``PUT /session/?uncompress=true`` (a tar.gz
   of a volume, checked and unpacked; the session deleted again); and a probe calls ``GET /info/`` every
   ``PROBE_INTERVAL_S``: its row shows how the API answers while they run.
4. After the window: waits for the training to end (stops it after ``--train-wait`` s), then downloads every
   uploaded label (``GET /datastore/label``) and reads every class label (``GET /classlabel/<task>``). With
   overlapping writes the final state may be any write that no other write started after (the last one to
   finish is not necessarily the last applied); it must be byte-identical to one of those.

Prints a table per request kind (count, req/s over the window, p50/p95/max latency of all its requests, errors:
non-2xx answers or exceptions), the training's outcome and whether it ran through the whole window, "labels
verified: X/Y", the server's peak RSS (server and its children, the training included) and any 5xx / traceback
lines of the server log. Exit status 1 on any error, any label that fails verification or a training that ends
in ERROR.
"""

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import APP_DIR, ROOT, check_count, format_table, percentile, server, vm_hwm_mb  # noqa: E402
from machine import machine, machine_line  # noqa: E402

SHIPPED_DIR = APP_DIR / "shipped"
#: (task, image, output) of the infer requests in the mix
INFERS = (
    ("sequence", "synth_slice03", "json"),
    ("tumor_gate", "synth01_flair", "json"),
    ("tumor_seg", "synth04_flair", "all"),
    ("dementia_stage", "synth02_t1", "json"),
    ("hippocampus", "synth_hippo02_t1", "all"),
    ("tumor_type", "synth_slice01", "json"),
    ("tumor_pipeline", "synth02_flair", "all"),
    ("sequence", "synth04_t2", "json"),
)
#: images that get ``final`` segmentation labels (the tumor masks the tumor_gate/tumor_seg trainings read,
#: hippocampus masks, 2D slice masks) and the task of each: its segment names (label values 1, 2, ...) are the
#: task's labels as the server's ``GET /info/`` gives them (:func:`describe_targets`)
UPLOAD_TARGETS = tuple((f"synth0{i}_flair", "tumor_seg") for i in range(1, 7)) + (
    ("synth_hippo03_t1", "hippocampus"),
    ("synth_hippo04_t1", "hippocampus"),
    ("synth_slice02", "tumor_seg"),
    ("synth_slice04", "tumor_seg"),
)
#: (task, image) of the class-label corrections (images the infers also record predictions on)
CLASS_TARGETS = (
    ("sequence", "synth_slice03"),
    ("tumor_gate", "synth01_flair"),
    ("dementia_stage", "synth02_t1"),
    ("tumor_type", "synth_slice01"),
    ("sequence", "synth04_t2"),
    ("tumor_gate", "synth03_flair"),
    ("dementia_stage", "synth05_t1"),
    ("tumor_type", "synth02_flair"),
)
LABEL_TAG = "final"
FINISHED = ("DONE", "ERROR", "STOPPED")
SERIAL_BITS = 32
#: (kind, method, path) of the slow routes (:class:`SlowRoutes`); ``session upload`` sends :func:`series_archive`
SLOW_ROUTES = (
    ("strategy entropy", "POST", "/activelearning/entropy"),
    ("dataset zip", "GET", "/datastore/dataset"),
    ("strategy epistemic", "POST", "/activelearning/epistemic"),
    ("session upload", "PUT", "/session/?uncompress=true"),
)
PROBE = "info (probe)"
PROBE_INTERVAL_S = 0.25
LOG_PROBLEM = re.compile(r'HTTP/1\.[01]" 5\d\d|Traceback|\bERROR\b')

# ------------------------------------------------------------------------------------------------ pure helpers


def mix(n_infers: int = len(INFERS)) -> List[tuple]:
    """One client cycle: every infer once, with an upload after every other infer and a class label after the
    others, e.g. ``[("infer", 0), ("upload",), ("infer", 1), ("classlabel",), ...]``."""
    plan = []
    for i in range(n_infers):
        plan += [("infer", i), ("upload",) if i % 2 == 0 else ("classlabel",)]
    return plan


def _kind_rank(kind: str) -> int:
    """Table order of a request kind: the infers in :data:`INFERS` order, then the writes, then the rest."""
    order = (
        [f"infer {task}" for task, _, _ in INFERS] + ["label upload", "class label"] + [k for k, _, _ in SLOW_ROUTES]
    )
    order += [PROBE, "train status"]
    return order.index(kind) if kind in order else len(order)


def summarize(records: Sequence[Dict], window_s: float) -> List[Dict]:
    """Per request kind (infers in :data:`INFERS` order, then writes, then the rest) and in total:
    ``{"kind", "n", "rate", "p50_ms", "p95_ms", "max_ms", "errors"}``; ``rate`` is requests per second over
    ``window_s``; latencies over all requests of the kind, failed ones included; an error is a record whose ``ok`` is
    false."""
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    kinds: Dict[str, List[Dict]] = {}
    for record in sorted(records, key=lambda r: _kind_rank(r["kind"])):
        kinds.setdefault(record["kind"], []).append(record)

    def row(kind: str, group: Sequence[Dict]) -> Dict:
        ms = [1000.0 * r["latency_s"] for r in group]
        return {
            "kind": kind,
            "n": len(group),
            "rate": len(group) / window_s,
            "p50_ms": percentile(ms, 50),
            "p95_ms": percentile(ms, 95),
            "max_ms": max(ms) if ms else float("nan"),
            "errors": sum(1 for r in group if not r["ok"]),
        }

    return [row(kind, group) for kind, group in kinds.items()] + [row("total", records)]


def results_table(rows: Iterable[Dict]) -> str:
    """The rows of :func:`summarize` as a plain-text table."""
    headers = ["request", "n", "req/s", "p50 ms", "p95 ms", "max ms", "errors"]
    lines = [[r["kind"], r["n"], round(r["rate"], 2), r["p50_ms"], r["p95_ms"], r["max_ms"], r["errors"]] for r in rows]
    return format_table(headers, lines, [False] + [True] * 6)


def final_candidates(writes: Sequence[Dict]) -> List:
    """The values a store may finally hold after the successful ``writes`` of one key (each ``{"start", "end",
    "value"}``, times on one clock): those of the writes no other write started after (a write that ended
    before another began cannot be the last one applied). Empty for no writes."""
    latest_start = max((w["start"] for w in writes), default=None)
    out = []
    for w in writes:
        if w["end"] >= latest_start and w["value"] not in out:
            out.append(w["value"])
    return out


def verify_writes(writes: Sequence[Dict], read_final: Callable[[object], object]) -> Dict:
    """Check the final value of every key written: ``writes`` are ``{"key", "start", "end", "value", "ok"}``
    (failed writes are ignored), ``read_final(key)`` returns the stored value (or raises). Returns ``{"verified",
    "total", "writes", "failures": [{"key", "found", "expected"}]}``; ``total`` counts the keys, ``writes`` the
    successful writes."""
    by_key: Dict[object, List[Dict]] = {}
    for w in writes:
        if w["ok"]:
            by_key.setdefault(w["key"], []).append(w)
    failures = []
    for key, group in by_key.items():
        expected = final_candidates(group)
        try:
            found = read_final(key)
        except Exception as error:  # a failed read fails the key, whatever it raised
            found = f"read failed: {error!r}"
        if found not in expected:
            failures.append({"key": key, "found": found, "expected": expected})
    return {
        "verified": len(by_key) - len(failures),
        "total": len(by_key),
        "writes": sum(map(len, by_key.values())),
        "failures": failures,
    }


def encode_serial(array, serial: int) -> None:
    """Write ``serial`` (0 < serial < 2**SERIAL_BITS) in binary, most significant bit first, into the first
    ``SERIAL_BITS`` voxels of the array's first row (``array[:32, 0, ...]``) as 0/1 values, in place."""
    if not 0 < serial < 2**SERIAL_BITS:
        raise ValueError(f"serial must lie in 1..{2**SERIAL_BITS - 1}, got {serial}")
    if array.shape[0] < SERIAL_BITS:
        raise ValueError(f"the first axis needs {SERIAL_BITS} voxels, has {array.shape[0]}")
    row = array[(slice(0, SERIAL_BITS),) + (0,) * (array.ndim - 1)]
    row[:] = [(serial >> (SERIAL_BITS - 1 - i)) & 1 for i in range(SERIAL_BITS)]


def decode_serial(array) -> int:
    """The serial :func:`encode_serial` wrote (0 for an array without one, e.g. the sample data's own label)."""
    row = array[(slice(0, SERIAL_BITS),) + (0,) * (array.ndim - 1)]
    return int("".join("1" if v else "0" for v in row), 2)


def label_mask(shape: Sequence[int], serial: int, max_label: int, seed: int = 0):
    """A uint8 mask of ``shape``: a random box of label 1..``max_label`` (seeded by ``seed`` and ``serial``) and
    ``serial`` in its first row; masks of different serials always differ."""
    import numpy as np

    rng = np.random.default_rng([seed, serial])
    mask = np.zeros(tuple(shape), np.uint8)
    box = []
    for n in shape:
        size = int(rng.integers(max(1, n // 8), max(2, n // 3)))
        start = int(rng.integers(1, max(2, n - size)))
        box.append(slice(start, start + size))
    mask[tuple(box)] = int(rng.integers(1, max_label + 1))
    encode_serial(mask, serial)
    return mask


def label_file_bytes(mask, affine=None) -> bytes:
    """A 2D mask as an 8-bit PNG, a 3D one (with its image's ``affine``) as gzipped NIfTI (gzip time 0)."""
    if mask.ndim == 2:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(mask, "L").save(buffer, format="PNG")
        return buffer.getvalue()
    import nibabel as nib

    return gzip.compress(nib.Nifti1Image(mask, affine).to_bytes(), mtime=0)


def label_file_array(data: bytes):
    """The voxels of a label file :func:`label_file_bytes` wrote (PNG or gzipped NIfTI)."""
    import numpy as np

    if data[:8] == b"\x89PNG\r\n\x1a\n":
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(data)))
    import nibabel as nib

    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(data)).dataobj)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def training_covered(samples: Sequence[Dict], window: Sequence[float]) -> bool:
    """Whether the training ran through the window: the monitor's samples (``{"t", "status"}``) cover it from its
    start to its end and every one says RUNNING."""
    return (
        bool(samples)
        and samples[0]["t"] <= window[0] + 2.0
        and samples[-1]["t"] >= window[1]
        and all(s["status"] == "RUNNING" for s in samples)
    )


# ----------------------------------------------------------------------------------------------------- clients


class Recorder:
    """Thread-safe log of requests (``kind``, ``status``, ``ok``, ``start``/``end`` on ``time.perf_counter``,
    ``latency_s``, ``client``, ``detail`` and extra fields) and a serial-number source."""

    def __init__(self):
        self.records: List[Dict] = []
        self._lock = threading.Lock()
        self._serial = 0

    def next_serial(self) -> int:
        with self._lock:
            self._serial += 1
            return self._serial

    def call(self, kind: str, send: Callable, client: int = -1, **extra):
        """Run ``send()`` (a requests call) and record it; return ``(record, response)``. An exception is a failed
        record with status None (and response None)."""
        start = time.perf_counter()
        response = None
        try:
            response = send()
            status, ok = response.status_code, response.ok
            detail = None if ok else response.text[:300]
        except Exception as error:  # any failure of the call is an error of the run, recorded, not raised
            status, ok, detail = None, False, repr(error)[:300]
        end = time.perf_counter()
        record = {
            "kind": kind,
            "status": status,
            "ok": ok,
            "start": start,
            "end": end,
            "latency_s": end - start,
            "client": client,
            "detail": detail,
            **extra,
        }
        with self._lock:
            self.records.append(record)
        return record, response


class Client(threading.Thread):
    """One client: loops over :func:`mix` from its own starting point until ``deadline`` (perf_counter); never
    starts a request after it. Client ``i`` starts its uploads and class labels at target ``3 i`` (modulo their
    number), so a few clients spread over every target and still meet on some."""

    def __init__(
        self, index: int, url: str, targets: Dict, recorder: Recorder, deadline: float, timeout: float, seed: int
    ):
        super().__init__(daemon=True, name=f"client-{index}")
        self.index, self.url, self.targets, self.recorder = index, url, targets, recorder
        self.deadline, self.timeout, self.seed = deadline, timeout, seed
        self.plan = mix()
        self.uploads = self.labels = 0

    def run(self):
        import requests

        with requests.Session() as session:
            step = 2 * self.index
            while time.perf_counter() < self.deadline:
                action = self.plan[step % len(self.plan)]
                getattr(self, f"_{action[0]}")(session, *action[1:])
                step += 1

    def _infer(self, session, i: int):
        task, image, output = INFERS[i]
        self.recorder.call(
            f"infer {task}",
            lambda: session.post(
                f"{self.url}/infer/{task}", params={"image": image, "output": output}, timeout=self.timeout
            ),
            self.index,
        )

    def _upload(self, session):
        image, task = UPLOAD_TARGETS[(3 * self.index + self.uploads) % len(UPLOAD_TARGETS)]
        self.uploads += 1
        target, segments = self.targets["images"][image], self.targets["segments"][task]
        serial = self.recorder.next_serial()
        data = label_file_bytes(label_mask(target["shape"], serial, len(segments), self.seed), target["affine"])
        name = "label.png" if target["ext"] == ".png" else "label.nii.gz"
        params = json.dumps(
            {"label_info": [{"name": name, "idx": i + 1} for i, name in enumerate(segments)], "load_serial": serial}
        )
        self.recorder.call(
            "label upload",
            lambda: session.put(
                f"{self.url}/datastore/label",
                params={"image": image, "tag": LABEL_TAG},
                files={"label": (name, data)},
                data={"params": params},
                timeout=self.timeout,
            ),
            self.index,
            key=image,
            value=sha256(data),
            serial=serial,
        )

    def _classlabel(self, session):
        task, image = CLASS_TARGETS[(3 * self.index + self.labels) % len(CLASS_TARGETS)]
        self.labels += 1
        classes = self.targets["classes"][task]
        label = classes[self.recorder.next_serial() % len(classes)]
        self.recorder.call(
            "class label",
            lambda: session.put(
                f"{self.url}/classlabel/{task}", params={"image": image}, json={"label": label}, timeout=self.timeout
            ),
            self.index,
            key=f"{task}:{image}",
            value=label,
        )


def series_archive(shape: Sequence[int] = (64, 64, 24), seed: int = 0) -> bytes:
    """A tar.gz holding one NIfTI volume (``series/volume.nii.gz``), as a viewer uploads a series to a session."""
    import tarfile

    import numpy as np

    payload = label_file_bytes(np.random.default_rng(seed).normal(100, 10, tuple(shape)).astype(np.float32), np.eye(4))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("series/volume.nii.gz")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


class SlowRoutes(threading.Thread):
    """Loops over :data:`SLOW_ROUTES` until ``deadline``; a session it made is deleted again (not recorded)."""

    def __init__(self, url: str, recorder: "Recorder", deadline: float, timeout: float, seed: int):
        super().__init__(daemon=True, name="slow-routes")
        self.url, self.recorder, self.deadline, self.timeout = url, recorder, deadline, timeout
        self.archive = series_archive(seed=seed)

    def run(self):
        import requests

        with requests.Session() as session:
            step = 0
            while time.perf_counter() < self.deadline:
                kind, method, path = SLOW_ROUTES[step % len(SLOW_ROUTES)]
                files = {"files": ("series.tar.gz", self.archive)} if kind == "session upload" else None
                record, response = self.recorder.call(
                    kind,
                    lambda: session.request(
                        method,
                        self.url + path,
                        files=files,
                        json={} if method == "POST" else None,
                        timeout=self.timeout,
                    ),
                )
                if kind == "session upload" and record["ok"]:
                    session.delete(f"{self.url}/session/{response.json()['session_id']}", timeout=self.timeout)
                step += 1


class Probe(threading.Thread):
    """``GET /info/`` every ``interval`` s until ``deadline``: the API's answer time while the load runs."""

    def __init__(
        self, url: str, recorder: "Recorder", deadline: float, timeout: float, interval: float = PROBE_INTERVAL_S
    ):
        super().__init__(daemon=True, name="probe")
        self.url, self.recorder, self.deadline, self.timeout, self.interval = url, recorder, deadline, timeout, interval

    def run(self):
        import requests

        with requests.Session() as session:
            while time.perf_counter() < self.deadline:
                self.recorder.call(PROBE, lambda: session.get(f"{self.url}/info/", timeout=self.timeout))
                time.sleep(self.interval)


class TrainMonitor(threading.Thread):
    """Polls ``GET /train/`` every ``interval`` s until stopped, and once more then; keeps ``{"t", "status"}``
    samples (``t`` on ``time.perf_counter``)."""

    def __init__(self, url: str, recorder: Recorder, timeout: float, interval: float = 1.0):
        super().__init__(daemon=True, name="train-monitor")
        self.url, self.recorder, self.timeout, self.interval = url, recorder, timeout, interval
        self.samples: List[Dict] = []
        self._stop_event = threading.Event()

    def run(self):
        import requests

        with requests.Session() as session:
            while True:
                stopping = self._stop_event.is_set()  # one more sample after the stop: the window's end
                record, response = self.recorder.call(
                    "train status", lambda: session.get(f"{self.url}/train/", timeout=self.timeout)
                )
                self.samples.append(
                    {"t": record["end"], "status": response.json().get("status") if record["ok"] else None}
                )
                if stopping:
                    break
                self._stop_event.wait(self.interval)

    def stop(self):
        self._stop_event.set()
        self.join(timeout=self.timeout + 5)


# ------------------------------------------------------------------------------------------------ the run


def describe_targets(studies: Path, info: Dict) -> Dict:
    """Shape, affine and file extension of every upload target image (read from the datastore folder), the label
    names of every upload target's task in label-value order and the class names of every class-label task (both from
    ``GET /info/``)."""
    import nibabel as nib
    import numpy as np
    from nibabel.spatialimages import SpatialImage
    from PIL import Image

    images = {}
    for image, _ in UPLOAD_TARGETS:
        found = sorted(p for p in studies.glob(f"{image}.*") if p.is_file())
        if not found:
            raise FileNotFoundError(f"upload target {image} is not in {studies}")
        if found[0].suffix == ".png":
            images[image] = {"shape": np.asarray(Image.open(found[0])).shape[:2], "affine": None, "ext": ".png"}
        else:
            img = cast(SpatialImage, nib.load(str(found[0])))  # NIfTI (load() is annotated with the base class)
            images[image] = {"shape": img.shape[:3], "affine": img.affine, "ext": ".nii.gz"}

    def names(task: str) -> List[str]:
        labels = info["models"][task]["labels"]
        return sorted(labels, key=labels.__getitem__) if isinstance(labels, dict) else list(labels)

    segments = {task: names(task) for _, task in UPLOAD_TARGETS}
    return {"images": images, "segments": segments, "classes": {task: names(task) for task, _ in CLASS_TARGETS}}


def start_training(url: str, task: str, epochs: int, timeout: float, wait_s: float = 120.0) -> Dict:
    """``POST /train/<task>`` and wait until its status is RUNNING; return the answer. RuntimeError if it is
    refused or ends first."""
    import requests

    response = requests.post(
        f"{url}/train/{task}",
        json={"max_epochs": epochs, "early_stop_patience": 0, "multi_gpu": False, "name": "load"},
        timeout=timeout,
    )
    if not response.ok:
        raise RuntimeError(f"POST /train/{task}: HTTP {response.status_code}: {response.text[:300]}")
    started = time.perf_counter()
    while time.perf_counter() - started < wait_s:
        status = requests.get(f"{url}/train/", timeout=timeout).json()
        if status.get("status") == "RUNNING":
            return status
        if status.get("status") in FINISHED:
            raise RuntimeError(
                f"training ended before the load started: {status.get('status')}: "
                f"{list(status.get('details') or [])[-5:]}"
            )
        time.sleep(0.2)
    raise RuntimeError(f"training did not start within {wait_s} s")


def finish_training(url: str, wait_s: float, timeout: float) -> Dict:
    """Wait up to ``wait_s`` for the training to end; stop it (``DELETE /train/``) after that (and give up a
    minute later, with the status it then has). Returns
    ``{"status", "stopped_by_benchmark", "waited_s", "details"}`` (``details``: its last output lines)."""
    import requests

    started = time.perf_counter()
    stopped = False
    while True:
        status = requests.get(f"{url}/train/", timeout=timeout).json()
        waited = time.perf_counter() - started
        if status.get("status") in FINISHED or waited > wait_s + 60:  # a training that outlives its stop: give up
            break
        if waited > wait_s and not stopped:
            requests.delete(f"{url}/train/", timeout=timeout)
            stopped = True
        time.sleep(1.0)
    return {
        "status": status.get("status"),
        "stopped_by_benchmark": stopped,
        "waited_s": round(time.perf_counter() - started, 1),
        "start_ts": status.get("start_ts"),
        "end_ts": status.get("end_ts"),
        "details": list(status.get("details") or [])[-8:],
    }


def verify(url: str, records: Sequence[Dict], timeout: float) -> Dict:
    """Download every uploaded label and read every class label; compare with the writes (:func:`verify_writes`)."""
    import requests

    def read_label(image):
        response = requests.get(f"{url}/datastore/label", params={"label": image, "tag": LABEL_TAG}, timeout=timeout)
        response.raise_for_status()
        return sha256(response.content)

    def read_class(key):
        task, image = key.split(":", 1)
        response = requests.get(f"{url}/classlabel/{task}", params={"image": image}, timeout=timeout)
        response.raise_for_status()
        record = response.json().get("label")
        return record.get("label") if isinstance(record, dict) else record

    uploads = [r for r in records if r["kind"] == "label upload"]
    labels = verify_writes(uploads, read_label)
    for failure in labels["failures"]:  # which upload the datastore holds, for the report
        with contextlib.suppress(Exception):
            data = requests.get(
                f"{url}/datastore/label", params={"label": failure["key"], "tag": LABEL_TAG}, timeout=timeout
            ).content
            failure["found_serial"] = decode_serial(label_file_array(data))
        serials = {r["value"]: r["serial"] for r in uploads if r["key"] == failure["key"]}
        failure["expected_serials"] = [serials.get(v) for v in failure["expected"]]
    classes = verify_writes([r for r in records if r["kind"] == "class label"], read_class)
    return {"labels": labels, "class_labels": classes}


def log_problems(log_path: Path, limit: int = 40) -> List[str]:
    """Lines of the server log with a 5xx answer, a traceback or an ERROR (the first ``limit``)."""
    if not log_path.exists():
        return []
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if LOG_PROBLEM.search(line)]
    return lines[:limit]


def load_window(
    url: str, targets: Dict, clients: int, duration: float, timeout: float, seed: int, slow_routes: bool = True
) -> Dict:
    """Run the clients, the training monitor and (``slow_routes``) :class:`SlowRoutes` and :class:`Probe` for
    ``duration`` s; returns ``{"records", "window", "covered"}`` (``window``: its start and end on
    ``time.perf_counter``; ``covered``: :func:`training_covered`)."""
    recorder = Recorder()
    monitor = TrainMonitor(url, recorder, timeout)
    start = time.perf_counter()
    monitor.start()
    workers: List[threading.Thread] = [
        Client(i, url, targets, recorder, start + duration, timeout, seed) for i in range(clients)
    ]
    if slow_routes:
        workers += [
            SlowRoutes(url, recorder, start + duration, timeout, seed),
            Probe(url, recorder, start + duration, timeout),
        ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    end = time.perf_counter()
    monitor.stop()
    return {
        "records": recorder.records,
        "window": (start, end),
        "covered": training_covered(monitor.samples, (start, end)),
        "statuses": sorted({str(s["status"]) for s in monitor.samples}),
    }


def run_load(
    work: Path,
    clients: int,
    duration: float,
    train_task: str,
    train_epochs: int,
    train_wait: float,
    timeout: float,
    threads: Optional[int] = None,
    seed: int = 0,
    log=print,
    slow_routes: bool = True,
) -> Dict:
    """The whole benchmark in ``work`` (datastore, model folder, server log); returns every number."""
    import requests

    from mri_label.sample_data import write_sample_data

    studies = work / "studies"
    shutil.rmtree(studies, ignore_errors=True)
    write_sample_data(studies)
    conf = {"models": "all", "model_dir": str(work / "model"), "shipped_models": str(SHIPPED_DIR)}
    log_path = work / "server.log"
    with server(APP_DIR, studies, conf, log_path, threads=threads) as srv:
        url = srv["url"]
        log(f"server ready in {srv['startup_s']:.1f} s ({url})")
        targets = describe_targets(studies, requests.get(f"{url}/info/", timeout=timeout).json())
        start_training(url, train_task, train_epochs, timeout)
        log(f"training {train_task} ({train_epochs} epochs) running; {clients} clients for {duration:.0f} s ...")
        load = load_window(url, targets, clients, duration, timeout, seed, slow_routes)
        log(f"load window over ({load['window'][1] - load['window'][0]:.1f} s); waiting for the training ...")
        training = finish_training(url, train_wait, timeout)
        training.update(task=train_task, epochs=train_epochs, covered_window=load["covered"], statuses=load["statuses"])
        checked = verify(url, load["records"], timeout)
        peak_mb, hwm = srv["memory"].peak_mb, vm_hwm_mb(srv["pid"])
    start, end = load["window"]
    return {
        "window_s": round(end - start, 2),
        "rows": summarize(load["records"], end - start),
        "training": training,
        "verification": checked,
        "peak_rss_mb": round(peak_mb, 1),
        "vm_hwm_mb": None if hwm is None else round(hwm, 1),
        "startup_s": round(srv["startup_s"], 2),
        "log_problems": log_problems(log_path),
        "log": str(log_path),
        "records": [
            {k: (round(v - start, 4) if k in ("start", "end") else v) for k, v in r.items()} for r in load["records"]
        ],
    }


def failed(result: Dict) -> List[str]:
    """Why the run fails (empty when it passes): errors, unverified labels, no label written at all, a training
    that ended in ERROR."""
    reasons = []
    errors = result["rows"][-1]["errors"]
    if errors:
        reasons.append(f"{errors} request(s) failed")
    for what, check in (
        ("labels", result["verification"]["labels"]),
        ("class labels", result["verification"]["class_labels"]),
    ):
        if check["verified"] != check["total"]:
            reasons.append(f"{check['total'] - check['verified']} of {check['total']} {what} not as last written")
        if not check["total"]:
            reasons.append(f"no {what} written, none verified")
    if result["training"]["status"] == "ERROR":
        reasons.append("the training ended in ERROR")
    return reasons


def report(result: Dict, clients: int, load: Sequence[float]) -> str:
    """The printed summary of a run."""
    t, v = result["training"], result["verification"]
    lines = [
        machine_line(machine(*load)),
        f"{clients} clients for {result['window_s']:.1f} s on loopback; "
        "latencies of all requests (failed ones included)",
        results_table(result["rows"]),
        f"training {t['task']} ({t['epochs']} epochs): {t['status']}"
        + (" (stopped by the benchmark)" if t["stopped_by_benchmark"] else "")
        + f"; running through the whole load window: {'yes' if t['covered_window'] else 'no'} "
        f"(statuses seen: {', '.join(t['statuses'])})",
        f"labels verified: {v['labels']['verified']}/{v['labels']['total']} ({v['labels']['writes']} uploads to "
        f"{v['labels']['total']} images: each holds its last); class labels verified: {v['class_labels']['verified']}/"
        f"{v['class_labels']['total']} ({v['class_labels']['writes']} corrections)",
        f"peak RSS, server and children (training included): {result['peak_rss_mb']:.0f} MB; VmHWM of the server "
        f"process: {result['vm_hwm_mb']} MB",
    ]
    for failure in v["labels"]["failures"] + v["class_labels"]["failures"]:
        lines.append(f"  NOT VERIFIED: {failure}")
    errors = [r for r in result["records"] if not r["ok"]]
    for r in errors[:20]:
        lines.append(f"  ERROR {r['kind']} (client {r['client']}): HTTP {r['status']}: {r['detail']}")
    if t["status"] == "ERROR":
        lines += ["  training output:"] + [f"    {line}" for line in t["details"]]
    lines.append(f"server log: {len(result['log_problems'])} line(s) with a 5xx, a traceback or ERROR")
    lines += [f"  {line}" for line in result["log_problems"][:20]]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from mri_label import tasks  # the task registry: --train-task takes any task of the app

    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", default=4, help="concurrent clients (1..32, default 4)")
    parser.add_argument("--duration", default=60, help="seconds of load (5..600, default 60)")
    parser.add_argument(
        "--train-task",
        default="tumor_gate",
        choices=tasks.LazyNames(tasks.task_names),
        help="task trained during the load (default tumor_gate)",
    )
    parser.add_argument(
        "--train-epochs",
        default=100,
        help="epochs of that training (1..100, default 100, no early "
        "stopping: more than the window holds; see --train-wait)",
    )
    parser.add_argument(
        "--train-wait",
        default=0,
        help="seconds to wait after the window for the training to end "
        "before stopping it with DELETE /train/ (0..3600, default 0: stop it at once)",
    )
    parser.add_argument("--timeout", default=300, help="seconds allowed per request (1..3600, default 300)")
    parser.add_argument("--threads", help="torch threads of the server (OMP_NUM_THREADS, 1..256; default torch's own)")
    parser.add_argument("--seed", default=0, help="seed of the uploaded labels' boxes (0..1000000, default 0)")
    parser.add_argument(
        "--no-slow-routes",
        dest="slow_routes",
        action="store_false",
        help="leave out the slow routes (strategies, dataset ZIP, session archive) and the /info probe",
    )
    parser.add_argument("--json", type=Path, help="also write every number (and every request) to this JSON file")
    parser.add_argument(
        "--work",
        type=Path,
        help="keep the datastore, model folder and server log here (default: a temporary folder, removed at the end)",
    )
    args = parser.parse_args(argv)
    try:
        args.clients = check_count(args.clients, "--clients", 1, 32)
        args.duration = check_count(args.duration, "--duration", 5, 600)
        args.train_epochs = check_count(args.train_epochs, "--train-epochs", 1, 100)
        args.train_wait = check_count(args.train_wait, "--train-wait", 0, 3600)
        args.timeout = check_count(args.timeout, "--timeout", 1, 3600)
        args.seed = check_count(args.seed, "--seed", 0, 1_000_000)
        if args.threads is not None:
            args.threads = check_count(args.threads, "--threads", 1, 256)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv=None) -> int:
    """Run the benchmark; 0 when every request succeeded, every label verified and the training did not fail."""
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    load_before = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mri-load-")))
        work.mkdir(parents=True, exist_ok=True)
        result = run_load(
            work,
            args.clients,
            args.duration,
            args.train_task,
            args.train_epochs,
            args.train_wait,
            args.timeout,
            args.threads,
            args.seed,
            slow_routes=args.slow_routes,
        )
    load_after = os.getloadavg()[0]
    print()
    print(report(result, args.clients, (load_before, load_after)))
    reasons = failed(result)
    print("FAILED: " + "; ".join(reasons) if reasons else "PASSED: no errors, every label as last written")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(load_before, load_after),
                    "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                    **result,
                    "failed": reasons,
                },
                indent=1,
                default=str,
            )
        )
        print(f"numbers written to {args.json}")
    return 1 if reasons else 0


if __name__ == "__main__":
    sys.exit(main())

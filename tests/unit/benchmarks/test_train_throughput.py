"""benchmarks/train_throughput.py: its helpers (arguments, the checkout a worker imports, the slice-cache and load
cells, the before/after cold/warm table), and one tiny run of one classifier task (8 images, cold then warm) that
must build the slice cache cold and find it warm."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import train_throughput as tt

ROOT = Path(__file__).resolve().parents[3]
BENCHMARKS = ROOT / "benchmarks"


def _checkout(path: Path, marker: str = "fake") -> Path:
    """The files ``--ref`` asks for, each module saying where it comes from."""
    for name in ("apps/mri_app/main.py", "apps/mri_app/lib/__init__.py", "mri_label/__init__.py"):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(f"ORIGIN = {marker!r}\n")
    return path


# ------------------------------------------------------------------------------------------------------ arguments


def test_parse_args_defaults():
    args = tt.parse_args([])
    assert args.tasks == list(tt.TASKS) and args.images == 48 and args.ref is None and args.threads is None
    assert args.source == "generated" and args.dataset == "CacheDataset" and args.timeout == 1800.0


def test_parse_args_takes_a_checkout_as_ref(tmp_path):
    ref = _checkout(tmp_path / "ref")
    args = tt.parse_args(["--ref", str(ref), "--tasks", "tumor_seg,sequence", "--images", "8", "--threads", "1"])
    assert (
        args.ref == ref.resolve() and args.tasks == ["tumor_seg", "sequence"] and args.images == 8 and args.threads == 1
    )


@pytest.mark.parametrize(
    "argv, name, value",
    [
        (["--images", "5"], "--images", "5"),
        (["--images", "2001"], "--images", "2001"),
        (["--timeout", "9"], "--timeout", "9.0"),
        (["--timeout", "7201"], "--timeout", "7201.0"),
        (["--threads", "0"], "--threads", "0"),
        (["--threads", "257"], "--threads", "257"),
        (["--tasks", "spleen"], "--tasks", "spleen"),
    ],
)
def test_parse_args_refuses_out_of_range(argv, name, value):
    with pytest.raises(ValueError, match=f"{name}.*{value}"):
        tt.parse_args(argv)


def test_parse_args_refuses_a_ref_that_is_no_checkout(tmp_path):
    with pytest.raises(ValueError, match=f"--ref.*{tmp_path / 'missing'}.*not a folder"):
        tt.parse_args(["--ref", str(tmp_path / "missing")])
    partial = tmp_path / "partial"
    (partial / "apps" / "mri_app").mkdir(parents=True)
    (partial / "apps" / "mri_app" / "main.py").write_text("")
    with pytest.raises(ValueError, match=f"--ref.*{partial}.*no apps/mri_app/lib/__init__.py, mri_label/__init__.py"):
        tt.parse_args(["--ref", str(partial)])
    with pytest.raises(ValueError, match="--ref.*''"):
        tt.check_ref("")


def test_main_reports_a_bad_argument_as_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stopped:
        tt.main(["--images", "3"])
    assert stopped.value.code == 2 and "--images must lie in 6..2000, got 3" in capsys.readouterr().err


@pytest.mark.parametrize("value", [None, True, "7", float("nan"), 0, 11])
def test_check_range_refuses(value):
    with pytest.raises(ValueError, match=f"--x must lie in 1..10, got {value!r}"):
        tt.check_range("--x", value, 1, 10)


def test_check_range_accepts():
    assert tt.check_range("--x", 1, 1, 10) == 1 and tt.check_range("--x", 10.0, 1, 10) == 10.0


def test_phases_run_slice_tasks_cold_then_warm():
    assert [t for t in tt.TASKS if tt.phases(t) == ["cold", "warm"]] == list(tt.SLICE_TASKS)
    assert tt.phases("hippocampus") == ["-"]


def test_cache_dir_is_the_apps_cache_folder():
    from lib.slice_cache import CACHE_FOLDER

    assert Path(CACHE_FOLDER).parts[0] == tt.CACHE_DIR


# --------------------------------------------------------------------------------------- which checkout is imported


def test_child_env_puts_the_checkout_first(tmp_path):
    ref = tmp_path / "ref"
    env = tt.child_env(ref, threads=3, base={"PYTHONPATH": os.pathsep.join(["/x", str(ref)]), "HOME": "/h"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ref.resolve() / "apps" / "mri_app"), str(ref.resolve()), "/x"]
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3" and env["HOME"] == "/h"
    assert "OMP_NUM_THREADS" not in tt.child_env(ref, base={})


def _import_in_child(checkout: Path, prelude: str = "") -> subprocess.CompletedProcess:
    code = (
        f"import json, sys; sys.path.insert(0, {str(BENCHMARKS)!r}); {prelude}import train_throughput as tt; "
        f"print(json.dumps(tt.import_app({str(checkout)!r})))"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=tt.child_env(checkout),
        cwd=str(checkout.parent),
    )


def test_a_worker_imports_lib_main_and_mri_label_from_the_ref_checkout(tmp_path):
    """Ahead of the venv's editable install of mri_label (which points at this checkout)."""
    ref = _checkout(tmp_path / "ref")
    done = _import_in_child(ref)
    assert done.returncode == 0, done.stderr
    files = json.loads(done.stdout.strip().splitlines()[-1])
    ref = ref.resolve()
    assert files == {
        "lib": str(ref / "apps/mri_app/lib/__init__.py"),
        "main": str(ref / "apps/mri_app/main.py"),
        "mri_label": str(ref / "mri_label/__init__.py"),
    }


def test_import_app_refuses_modules_imported_before(tmp_path):
    ref = _checkout(tmp_path / "ref")
    done = _import_in_child(ref, prelude=f"sys.path.insert(0, {str(ROOT)!r}); import mri_label; ")
    assert done.returncode != 0 and "['mri_label'] imported before the checkout" in done.stderr


# ------------------------------------------------------------------------------------------- cache and load cells


def test_cache_snapshot_and_change(tmp_path):
    folder = tmp_path / tt.CACHE_DIR / "slices"
    assert tt.cache_snapshot(tmp_path) == {}
    folder.mkdir(parents=True)
    for name in ("a.image.npy", "b.image.npy", "b.mask.npy", "c.partial.npy"):
        (folder / name).write_bytes(b"x")
    before = tt.cache_snapshot(tmp_path)
    assert sorted(before) == ["slices/a.image.npy", "slices/b.image.npy", "slices/b.mask.npy"]  # not a partial write
    assert tt.cache_change({}, before) == {"before": 0, "after": 3, "found": 0, "built": 3}
    assert tt.cache_change(before, tt.cache_snapshot(tmp_path)) == {"before": 3, "after": 3, "found": 3, "built": 0}
    (folder / "new.npy").write_bytes(b"y")
    os.replace(folder / "c.partial.npy", folder / "a.image.npy")  # rewritten as the cache writes: a new file
    assert tt.cache_change(before, tt.cache_snapshot(tmp_path)) == {"before": 3, "after": 4, "found": 2, "built": 2}


@pytest.mark.parametrize(
    "change, cell",
    [
        (None, None),
        ({"before": 0, "after": 0, "found": 0, "built": 0}, "none"),
        ({"before": 0, "after": 12, "found": 0, "built": 12}, "built 12"),
        ({"before": 12, "after": 12, "found": 12, "built": 0}, "found 12"),
        ({"before": 12, "after": 14, "found": 11, "built": 3}, "found 11, built 3"),
    ],
)
def test_cache_cell(change, cell):
    assert tt.cache_cell(change) == cell


def test_load_cell():
    assert tt.load_cell((4.567, 1.0, 0.5), [4.04, 2.0, 1.0]) == "4.6/4.0"
    assert tt.load_cell(None, (1.0, 1.0, 1.0)) is None


# ------------------------------------------------------------------------------------------------------ the table


def _result(side, task, phase, samples_per_s, first_epoch_s, **extra):
    result = {
        "side": side,
        "commit": {"before": "7851caa", "after": "2b5a709"}[side],
        "task": task,
        "phase": phase,
        "device": "cpu",
        "amp": False,
        "torch_threads": 1 if side == "after" else 2,
        "samples": 22,
        "first_epoch_s": first_epoch_s,
        "epoch_s": 22 / samples_per_s,
        "samples_per_s": samples_per_s,
        "vm_hwm_mb": 1100.0,
        "tree_rss_peak_mb": 1200.0,
        "cuda_peak_mb": None,
        "epoch_cpu_s": 0.5,
        "run_s": 9.0,
        "load_start": [1.25, 1.0, 1.0],
        "load_end": [1.5, 1.0, 1.0],
        "cache": {"before": 0, "after": 0, "found": 0, "built": 0},
    }
    result.update(extra)
    return result


def test_table_before_after_cold_warm():
    built = {"before": 0, "after": 12, "found": 0, "built": 12}
    found = {"before": 12, "after": 12, "found": 12, "built": 0}
    results = [
        _result("before", "sequence", "cold", 2.0, 40.0),
        _result("before", "sequence", "warm", 4.0, 30.0),
        _result("after", "sequence", "cold", 8.0, 10.0, cache=built),
        _result("after", "sequence", "warm", 10.0, 2.0, cache=found),
        _result("before", "hippocampus", "-", 1.0, 5.0),
        {
            "side": "after",
            "commit": "2b5a709",
            "task": "hippocampus",
            "phase": "-",
            "error": "exit 1",
            "load_start": [2.0, 0, 0],
            "load_end": [2.5, 0, 0],
            "cache": {"before": 0, "after": 0, "found": 0, "built": 0},
        },
    ]
    rows = tt.table_rows(results)
    assert all(len(r) == len(tt.HEADERS) == len(tt.RIGHT) for r in rows)
    cell = lambda row, header: rows[row][tt.HEADERS.index(header)]  # noqa: E731
    assert [(cell(i, "code"), cell(i, "task"), cell(i, "cache")) for i in range(len(rows))] == [
        ("before 7851caa", "sequence", "cold"),
        ("before 7851caa", "sequence", "warm"),
        ("after 2b5a709", "sequence", "cold"),
        ("after 2b5a709", "sequence", "warm"),
        ("before 7851caa", "hippocampus", "-"),
        ("after 2b5a709", "hippocampus", "-"),
    ]
    assert [cell(i, "slice cache") for i in range(6)] == ["none", "none", "built 12", "found 12", "none", "none"]
    assert cell(0, "x samples/s") is None and cell(0, "x first epoch") is None  # before rows: no ratio
    # cold vs cold
    assert cell(2, "x samples/s") == pytest.approx(4.0) and cell(2, "x first epoch") == pytest.approx(4.0)
    # warm vs warm
    assert cell(3, "x samples/s") == pytest.approx(2.5) and cell(3, "x first epoch") == pytest.approx(15.0)
    assert cell(0, "first epoch s") == 40.0 and cell(0, "threads") == 2 and cell(3, "threads") == 1
    assert cell(0, "peak MB") == 1200.0 and cell(0, "load start/end") == "1.2/1.5"
    assert cell(5, "note") == "exit 1" and cell(5, "load start/end") == "2.0/2.5" and cell(5, "samples/s") is None

    lines = tt.format_results(results).splitlines()
    assert len(lines) == 2 + len(results)
    assert lines[0].split()[:5] == ["code", "task", "cache", "device", "AMP"] and "first epoch s" in lines[0]
    assert "load start/end" in lines[0] and set(lines[1]) <= {"-", " "}
    assert "built 12" in lines[4] and "found 12" in lines[5] and "15.0" in lines[5] and "exit 1" in lines[7]


def test_table_without_a_ref_has_no_ratios():
    rows = tt.table_rows([_result("after", "sequence", "cold", 8.0, 10.0)])
    assert rows[0][-3:] == [None, None, ""]


# ------------------------------------------------------------------------------------------- one tiny real run


def test_one_classifier_task_builds_the_cache_cold_and_finds_it_warm(tmp_path, capsys):
    out = tmp_path / "train.json"
    code = tt.main(
        [
            "--tasks",
            "sequence",
            "--images",
            "8",
            "--work",
            str(tmp_path / "work"),
            "--json",
            str(out),
            "--timeout",
            "900",
        ]
    )
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert code == 0, report
    cold, warm = report["results"]
    assert (cold["phase"], warm["phase"]) == ("cold", "warm") and cold["side"] == warm["side"] == "after"
    for run in (cold, warm):
        assert run["modules"]["mri_label"] == str(ROOT / "mri_label" / "__init__.py")
        assert run["modules"]["lib"] == str(ROOT / "apps" / "mri_app" / "lib" / "__init__.py")
        assert run["samples"] > 0 and run["samples_per_s"] > 0 and run["torch_threads"] >= 1
        assert 0 < run["first_epoch_s"] < run["run_s"] and len(run["load_start"]) == len(run["load_end"]) == 3
    assert cold["cache"]["before"] == 0 and cold["cache"]["built"] == cold["cache"]["after"] > 0
    assert warm["cache"] == {
        "before": cold["cache"]["after"],
        "after": cold["cache"]["after"],
        "found": cold["cache"]["after"],
        "built": 0,
    }
    rows = [line for line in printed.splitlines() if line.startswith("after ")]
    assert len(rows) == 2
    assert " cold " in rows[0] and f"built {cold['cache']['built']}" in rows[0]
    assert " warm " in rows[1] and f"found {cold['cache']['after']}" in rows[1]

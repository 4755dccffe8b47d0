"""benchmarks/load.py: its pure helpers, and one tiny run against the real server (2 clients, 12 s, a 1-epoch
training) that must end with no errors and every uploaded label verified."""

import json

import numpy as np
import pytest

import load


def _write(key, start, end, value, ok=True):
    return {"key": key, "start": start, "end": end, "value": value, "ok": ok}


@pytest.mark.parametrize(
    "writes, expected",
    [
        ([], []),
        ([_write("a", 0, 1, "x")], ["x"]),
        ([_write("a", 0, 1, "x"), _write("a", 2, 3, "y")], ["y"]),  # one after the other: only the last
        ([_write("a", 0, 3, "x"), _write("a", 1, 2, "y")], ["x", "y"]),  # overlapping: either
        ([_write("a", 0, 1, "x"), _write("a", 2, 5, "y"), _write("a", 3, 4, "z")], ["y", "z"]),
        ([_write("a", 0, 2, "x"), _write("a", 1, 3, "x")], ["x"]),  # equal values once
    ],
)
def test_final_candidates(writes, expected):
    assert load.final_candidates(writes) == expected


def test_verify_writes_counts_keys_and_finds_a_lost_write():
    writes = [
        _write("a", 0, 1, "a1"),
        _write("a", 2, 3, "a2"),
        _write("b", 0, 1, "b1"),
        _write("c", 0, 1, "c1"),
        _write("c", 2, 3, "c2", ok=False),  # a failed write is not expected
    ]
    store = {"a": "a2", "b": "b1", "c": "c1"}
    assert load.verify_writes(writes, store.__getitem__) == {"verified": 3, "total": 3, "writes": 4, "failures": []}
    store["a"] = "a1"  # the last upload lost: the store holds an older one
    result = load.verify_writes(writes, store.__getitem__)
    assert (result["verified"], result["total"]) == (2, 3)
    assert result["failures"] == [{"key": "a", "found": "a1", "expected": ["a2"]}]
    del store["b"]  # a read that fails fails its key
    result = load.verify_writes(writes, store.__getitem__)
    assert result["verified"] == 1 and {f["key"] for f in result["failures"]} == {"a", "b"}


@pytest.mark.parametrize("shape", [(96, 96, 16), (64, 48, 40), (128, 128)])
@pytest.mark.parametrize("serial", [1, 2, 5, 1000, 2**32 - 1])
def test_serial_round_trip_through_the_label_file(shape, serial):
    affine = np.diag([2.0, 2.0, 6.0, 1.0])
    mask = load.label_mask(shape, serial, max_label=2)
    assert mask.shape == shape and mask.dtype == np.uint8 and mask.max() <= 2 and mask.sum() > 0
    data = load.label_file_bytes(mask, affine if len(shape) == 3 else None)
    assert data[:4] == (b"\x89PNG" if len(shape) == 2 else b"\x1f\x8b\x08\x00")
    back = load.label_file_array(data)
    assert np.array_equal(back, mask) and load.decode_serial(back) == serial
    assert load.label_file_bytes(mask, affine if len(shape) == 3 else None) == data  # byte-identical again


def test_masks_of_different_serials_differ_and_the_sample_label_has_serial_0():
    masks = {load.sha256(load.label_file_bytes(load.label_mask((96, 96, 16), s, 1), np.eye(4))) for s in range(1, 40)}
    assert len(masks) == 39
    assert load.decode_serial(np.zeros((96, 96, 16), np.uint8)) == 0


@pytest.mark.parametrize("serial, shape", [(0, (96, 96, 16)), (2**32, (96, 96, 16)), (1, (20, 96))])
def test_encode_serial_refuses(serial, shape):
    with pytest.raises(ValueError):
        load.encode_serial(np.zeros(shape, np.uint8), serial)


def test_mix_holds_every_infer_and_both_writes():
    plan = load.mix()
    assert sorted(a[1] for a in plan if a[0] == "infer") == list(range(len(load.INFERS)))
    assert plan.count(("upload",)) == plan.count(("classlabel",)) == len(load.INFERS) // 2
    assert {task for task, _, _ in load.INFERS} >= {
        "sequence",
        "tumor_gate",
        "tumor_seg",
        "hippocampus",
        "tumor_pipeline",
    }


def _record(kind, latency_s, ok=True):
    return {"kind": kind, "latency_s": latency_s, "ok": ok}


def test_summarize_and_table():
    records = [
        _record("infer a", 0.1),
        _record("infer a", 0.3),
        _record("upload", 0.2, ok=False),
        _record("infer a", 0.2),
    ]
    rows = load.summarize(records, window_s=2.0)
    assert [r["kind"] for r in rows] == ["infer a", "upload", "total"]
    a, upload, total = rows
    assert (a["n"], a["rate"], a["errors"]) == (3, 1.5, 0)
    assert (
        a["p50_ms"] == pytest.approx(200.0)
        and a["p95_ms"] == pytest.approx(290.0)
        and a["max_ms"] == pytest.approx(300.0)
    )
    assert (upload["n"], upload["errors"]) == (1, 1)
    assert (total["n"], total["rate"], total["errors"]) == (4, 2.0, 1) and total["p50_ms"] == pytest.approx(200.0)
    lines = load.results_table(rows).splitlines()
    assert lines[0].split() == ["request", "n", "req/s", "p50", "ms", "p95", "ms", "max", "ms", "errors"]
    assert lines[2].split() == ["infer", "a", "3", "1.5", "200", "290", "300", "0"]
    assert lines[-1].split()[0] == "total" and lines[-1].split()[-1] == "1"
    with pytest.raises(ValueError):
        load.summarize(records, 0)


def test_summarize_orders_infers_then_writes():
    kinds = ["train status", "infer tumor_seg", "label upload", "infer sequence", "class label"]
    rows = load.summarize([_record(kind, 0.1) for kind in kinds], window_s=1.0)
    assert [r["kind"] for r in rows] == [
        "infer sequence",
        "infer tumor_seg",
        "label upload",
        "class label",
        "train status",
        "total",
    ]


@pytest.mark.parametrize(
    "statuses, times, covered",
    [
        (["RUNNING"] * 3, [0.1, 5.0, 10.5], True),
        (["RUNNING", "RUNNING", "DONE"], [0.1, 5.0, 10.5], False),  # ended inside the window
        (["RUNNING"] * 2, [0.1, 5.0], False),  # no sample at the window's end
        (["RUNNING"] * 2, [4.0, 10.5], False),  # none at its start
        ([], [], False),
    ],
)
def test_training_covered(statuses, times, covered):
    samples = [{"t": t, "status": s} for t, s in zip(times, statuses)]
    assert load.training_covered(samples, (0.0, 10.0)) is covered


@pytest.mark.parametrize(
    "argv",
    [
        ["--clients", "0"],
        ["--clients", "33"],
        ["--clients", "2.5"],
        ["--duration", "4"],
        ["--duration", "601"],
        ["--train-epochs", "0"],
        ["--timeout", "0"],
        ["--threads", "0"],
        ["--train-task", "spleen"],
        ["--url", "http://10.0.0.1:8000"],
    ],
)
def test_parse_args_refuses(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load.parse_args(argv)
    assert exit_info.value.code == 2


def test_parse_args_defaults():
    args = load.parse_args([])
    assert (args.clients, args.duration, args.train_task, args.threads) == (4, 60, "tumor_gate", None)
    assert load.parse_args(["--clients", "32", "--duration", "5"]).clients == 32


def test_failed_names_every_reason():
    result = {
        "rows": [{"errors": 0}],
        "training": {"status": "DONE"},
        "verification": {"labels": {"verified": 3, "total": 3}, "class_labels": {"verified": 2, "total": 2}},
    }
    assert load.failed(result) == []
    result["rows"][-1]["errors"] = 2
    result["verification"]["labels"]["verified"] = 2
    result["training"]["status"] = "ERROR"
    result["verification"]["class_labels"] = {"verified": 0, "total": 0}
    assert load.failed(result) == [
        "2 request(s) failed",
        "1 of 3 labels not as last written",
        "no class labels written, none verified",
        "the training ended in ERROR",
    ]


def test_a_tiny_run_has_no_errors_and_verifies_every_label(tmp_path, capsys):
    out = tmp_path / "load.json"
    code = load.main(
        [
            "--clients",
            "2",
            "--duration",
            "12",
            "--train-epochs",
            "1",
            "--train-wait",
            "300",
            "--work",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert code == 0, printed
    assert result["failed"] == [] and result["rows"][-1]["kind"] == "total" and result["rows"][-1]["errors"] == 0
    kinds = {r["kind"] for r in result["rows"]}
    assert {"train status", "label upload", "class label"} <= kinds and any(k.startswith("infer ") for k in kinds)
    # the slow routes ran beside them, and the API answered the probe meanwhile
    assert {load.PROBE, load.SLOW_ROUTES[0][0]} <= kinds
    assert next(r for r in result["rows"] if r["kind"] == load.PROBE)["n"] >= 2
    labels, classes = result["verification"]["labels"], result["verification"]["class_labels"]
    uploaded = {r["key"] for r in result["records"] if r["kind"] == "label upload"}
    assert labels["total"] == len(uploaded) > 0 and labels["verified"] == labels["total"]
    assert classes["total"] > 0 and classes["verified"] == classes["total"]
    assert result["training"]["status"] == "DONE" and "RUNNING" in result["training"]["statuses"]
    assert f"labels verified: {labels['total']}/{labels['total']}" in printed
    # the label files in the datastore folder are uploads of this run (the sample labels carry serial 0)
    for image in uploaded:
        stored = (tmp_path / "work" / "studies" / "labels" / "final").glob(f"{image}.*")
        serials = [r["serial"] for r in result["records"] if r["kind"] == "label upload" and r["key"] == image]
        assert load.decode_serial(load.label_file_array(next(stored).read_bytes())) in serials


def test_the_series_archive_holds_one_volume():
    import gzip
    import io
    import tarfile

    import nibabel as nib

    with tarfile.open(fileobj=io.BytesIO(load.series_archive((8, 8, 4))), mode="r:gz") as archive:
        (member,) = archive.getmembers()
        data = archive.extractfile(member).read()
    assert member.name == "series/volume.nii.gz"
    assert nib.Nifti1Image.from_bytes(gzip.decompress(data)).shape == (8, 8, 4)


def test_slow_routes_are_on_by_default_and_can_be_left_out():
    assert load.parse_args([]).slow_routes is True
    assert load.parse_args(["--no-slow-routes"]).slow_routes is False


def test_slow_routes_and_the_probe_sort_after_the_writes():
    kinds = ["train status", load.PROBE, "class label", load.SLOW_ROUTES[1][0], "infer sequence"]
    assert sorted(kinds, key=load._kind_rank) == [
        "infer sequence",
        "class label",
        load.SLOW_ROUTES[1][0],
        load.PROBE,
        "train status",
    ]

"""lib.history on a temporary model folder: fine-tune decisions appended (promoted and kept), the replaced checkpoint
archived, archives bounded, rollback (and its undo), and history.json written whole through mri_label.core.atomic."""

import json
import os

import pytest

from lib import history
from lib.trainers.promotion import promote_candidate

RECORD = {"run": "r1", "metric": "val_dice", "labelled_images": 7, "epochs": 1}


@pytest.fixture
def task_dir(tmp_path):
    """A task folder serving checkpoint ``v0`` (model.pt and model.json)."""
    folder = tmp_path / "model" / "tumor_seg"
    folder.mkdir(parents=True)
    _serve(folder, "v0")
    return folder


def _serve(folder, version):
    (folder / "model.pt").write_bytes(f"weights {version}".encode())
    (folder / "model.json").write_text(json.dumps({"version": version}))


def _served(folder):
    return (folder / "model.pt").read_bytes().decode().split()[-1], json.loads((folder / "model.json").read_text())


def _finetune(folder, version, before=0.5, after=0.6, keep=history.DEFAULT_KEEP):
    """A fine-tune run of ``version``: its candidate promoted when ``after >= before``, as the trainer does it."""
    candidate = folder / "model.candidate.pt"
    candidate.write_bytes(f"weights {version}".encode())
    served = str(folder / "model.pt")

    def promote(archive):
        promoted, reason = promote_candidate(str(candidate), served, before, after, archive=archive)
        if promoted:  # the trainer writes the new card once promoted
            (folder / "model.json").write_text(json.dumps({"version": version}))
        return promoted, reason

    record = dict(RECORD, metric_before=before, metric_after=after, run=version)
    return history.record_decision(str(folder), record, promote, keep=keep)


def test_a_promotion_archives_the_replaced_checkpoint_and_is_appended(task_dir):
    served_before = history.read_history(str(task_dir))
    entry = _finetune(task_dir, "v1")
    assert served_before == [] and _served(task_dir) == ("v1", {"version": "v1"})
    assert entry["event"] == "promoted" and entry["promoted"] is True and entry["archive"]
    assert entry["metric_before"] == 0.5 and entry["metric_after"] == 0.6 and entry["labelled_images"] == 7
    assert entry["replaced"]["name"] == "model/tumor_seg/model.pt" and entry["time"].endswith("Z")
    archive = task_dir / "history" / entry["archive"]
    assert (archive / "model.pt").read_bytes() == b"weights v0"
    assert json.loads((archive / "model.json").read_text()) == {"version": "v0"}
    assert history.archives(str(task_dir)) == [entry["archive"]]
    assert history.read_history(str(task_dir)) == [entry]


def test_a_kept_candidate_is_appended_without_an_archive(task_dir):
    entry = _finetune(task_dir, "v1", before=0.6, after=0.5)
    assert entry["event"] == "kept" and entry["promoted"] is False and "worse" in entry["reason"]
    assert entry["archive"] is None and entry["replaced"] is None and entry["served"]["name"].endswith("model.pt")
    assert _served(task_dir) == ("v0", {"version": "v0"}) and history.archives(str(task_dir)) == []
    assert not (task_dir / "model.candidate.pt").exists()
    assert [e["event"] for e in history.read_history(str(task_dir))] == ["kept"]


def test_no_served_checkpoint_yet_nothing_to_archive(tmp_path):
    folder = tmp_path / "sequence"
    folder.mkdir()
    candidate = folder / "model.candidate.pt"
    candidate.write_bytes(b"weights v1")

    def promote(archive):
        return promote_candidate(str(candidate), str(folder / "model.pt"), 0.0, 0.1, archive=archive)

    entry = history.record_decision(str(folder), dict(RECORD), promote)
    assert entry["event"] == "promoted" and entry["archive"] is None and entry["replaced"] is None
    assert (folder / "model.pt").read_bytes() == b"weights v1" and history.archives(str(folder)) == []


def test_archives_are_bounded_and_older_entries_kept_without_one(task_dir):
    entries = [_finetune(task_dir, f"v{i}", keep=2) for i in range(1, 5)]
    kept = history.archives(str(task_dir))
    assert len(kept) == 2 and kept == [entries[2]["archive"], entries[3]["archive"]]
    assert sorted(os.listdir(task_dir / "history")) == kept  # the older folders are deleted
    assert [(task_dir / "history" / a / "model.pt").read_bytes() for a in kept] == [b"weights v2", b"weights v3"]
    recorded = history.read_history(str(task_dir))
    assert [e["run"] for e in recorded] == ["v1", "v2", "v3", "v4"]  # every decision stays in the history
    assert [e["archive"] for e in recorded] == [None, None, *kept]


def test_rollback_serves_the_newest_archive_and_a_second_one_undoes_it(task_dir):
    _finetune(task_dir, "v1")
    _finetune(task_dir, "v2")
    os.utime(task_dir / "model.pt", (1_000_000_000, 1_000_000_000))  # the served file's time, to compare with
    newest = history.archives(str(task_dir))[-1]
    entry = history.rollback(str(task_dir), by="adam.admin")
    assert _served(task_dir) == ("v1", {"version": "v1"})
    assert os.stat(task_dir / "model.pt").st_mtime > 1_000_000_000  # a new time: infer tasks reload the network
    assert entry["event"] == "rolled back" and entry["restored"] == newest and entry["by"] == "adam.admin"
    assert entry["from"]["mtime"] == 1_000_000_000 and entry["to"]["mtime"] > 1_000_000_000
    assert newest not in history.archives(str(task_dir))  # restored: it is what is served now
    assert (task_dir / "history" / entry["archive"] / "model.pt").read_bytes() == b"weights v2"
    recorded = history.read_history(str(task_dir))
    assert [e["event"] for e in recorded] == ["promoted", "promoted", "rolled back"]
    assert recorded[1]["archive"] is None  # its archive was restored
    undo = history.rollback(str(task_dir))
    assert _served(task_dir) == ("v2", {"version": "v2"}) and undo["restored"] == entry["archive"]


def test_rollback_without_an_archive_is_refused(task_dir):
    with pytest.raises(history.NoArchive):
        history.rollback(str(task_dir))
    _finetune(task_dir, "v1", before=0.9, after=0.1)  # kept: still nothing archived
    with pytest.raises(history.NoArchive):
        history.rollback(str(task_dir))
    assert _served(task_dir) == ("v0", {"version": "v0"})


def test_an_interrupted_archive_is_never_listed_and_is_cleared(task_dir):
    (task_dir / "history" / ".20240101T000000.000000Z").mkdir(parents=True)  # a copy cut short
    (task_dir / "history" / "20240101T000000.000000Z").mkdir()  # no model.pt: not an archive
    assert history.archives(str(task_dir)) == []
    entry = _finetune(task_dir, "v1")
    assert history.archives(str(task_dir)) == [entry["archive"]]
    assert not (task_dir / "history" / ".20240101T000000.000000Z").exists()


def test_history_is_written_whole_through_the_shared_atomic_writer(task_dir, monkeypatch):
    first = _finetune(task_dir, "v1", before=0.9, after=0.1)
    before = (task_dir / "history.json").read_bytes()
    written = []
    monkeypatch.setattr(history, "atomic_write_json", lambda path, *a, **k: written.append(path))
    _finetune(task_dir, "v2", before=0.9, after=0.1)
    assert written == [str(task_dir / "history.json")]  # mri_label.core.atomic's writer, nothing else writes it
    assert (task_dir / "history.json").read_bytes() == before
    monkeypatch.undo()

    def crash(*args):  # the rename that would publish the new history.json
        raise OSError("power loss")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power loss"):
        _finetune(task_dir, "v3", before=0.9, after=0.1)
    monkeypatch.undo()
    assert history.read_history(str(task_dir)) == [first]  # the old file whole, no half-written one
    assert not [n for n in os.listdir(task_dir) if n.endswith(".partial")]

"""Tests of mri_label.core.splits: one subject-level train/val/test split per datastore, stable once written."""

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from mri_label.core import splits
from mri_label.core.splits import ensure_split, load_split, split_of


def _datastore(folder: Path, subjects, images_per_subject: int = 2) -> Path:
    """A datastore_v2.json whose images carry ``info["subject"]`` (several images per subject)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "datastore_v2.json"
    objects = json.loads(path.read_text())["objects"] if path.exists() else {}
    for s in subjects:
        for k in range(images_per_subject):
            objects[f"{s}_img{k}"] = {"image": {"ext": ".nii.gz", "info": {"subject": s}}, "labels": {}}
    path.write_text(
        json.dumps({"name": "t", "description": "", "images_dir": ".", "labels_dir": "labels", "objects": objects})
    )
    return folder


SUBJECTS = [f"patient{i:03d}" for i in range(100)]


def test_first_call_writes_a_split_every_subject_on_one_side(tmp_path):
    store = _datastore(tmp_path / "ds", SUBJECTS)
    assert load_split(store) is None
    split = ensure_split(store)
    assert set(split["subjects"]) == set(SUBJECTS)
    assert set(split["subjects"].values()) == {"train", "val", "test"}
    assert Counter(split["subjects"].values()) == {"train": 70, "val": 15, "test": 15}
    assert split["seed"] == 0 and split["fractions"] == [0.7, 0.15, 0.15] and split["created"]
    assert load_split(store) == split == json.loads((store / "split.json").read_text())
    assert sorted(p.name for p in store.iterdir() if p.name.startswith(".split")) == []


def test_deterministic_and_seeded(tmp_path):
    a = ensure_split(_datastore(tmp_path / "a", SUBJECTS))
    b = ensure_split(_datastore(tmp_path / "b", list(reversed(SUBJECTS)), images_per_subject=1))
    c = ensure_split(_datastore(tmp_path / "c", SUBJECTS), seed=1)
    assert a["subjects"] == b["subjects"]
    assert c["subjects"] != a["subjects"] and Counter(c["subjects"].values()) == Counter(a["subjects"].values())


def test_later_calls_return_the_stored_split_unchanged(tmp_path):
    store = _datastore(tmp_path / "ds", SUBJECTS)
    first = ensure_split(store, fractions=(0.6, 0.2, 0.2), seed=3)
    stamp = (store / "split.json").stat().st_mtime_ns, (store / "split.json").read_bytes()
    again = ensure_split(store)  # other arguments: the stored split wins
    assert again == first and again["fractions"] == [0.6, 0.2, 0.2] and again["seed"] == 3
    assert ((store / "split.json").stat().st_mtime_ns, (store / "split.json").read_bytes()) == stamp


def test_new_subjects_are_added_by_hash_without_moving_old_ones(tmp_path):
    store = _datastore(tmp_path / "ds", SUBJECTS)
    first = ensure_split(store)
    late = [f"late{i:04d}" for i in range(1000)]
    predicted = {s: split_of(first, s) for s in late}  # what an unsaved lookup says before the split knows them
    _datastore(store, late, images_per_subject=1)
    second = ensure_split(store)
    assert {s: second["subjects"][s] for s in SUBJECTS} == first["subjects"]
    assert {s: second["subjects"][s] for s in late} == predicted
    assert second["created"] == first["created"] and "updated" in second
    shares = Counter(predicted.values())
    assert abs(shares["train"] - 700) < 50 and abs(shares["val"] - 150) < 40 and abs(shares["test"] - 150) < 40
    # the hash placement does not depend on arrival order or on the other subjects
    other = ensure_split(_datastore(tmp_path / "other", ["x"]))
    _datastore(tmp_path / "other", late[:10])
    assert {s: ensure_split(tmp_path / "other")["subjects"][s] for s in late[:10]} == {
        s: predicted[s] for s in late[:10]
    }
    assert other["subjects"] == {"x": "train"}


def test_split_of_reads_the_side(tmp_path):
    split = ensure_split(_datastore(tmp_path / "ds", SUBJECTS))
    assert all(split_of(split, s) == side for s, side in split["subjects"].items())


@pytest.mark.parametrize(
    "n, expected", [(1, [1, 0, 0]), (2, [1, 1, 0]), (3, [1, 1, 1]), (10, [7, 2, 1]), (7, [5, 1, 1])]
)
def test_small_sets_give_every_side_a_subject_when_possible(tmp_path, n, expected):
    split = ensure_split(_datastore(tmp_path / "ds", [f"s{i}" for i in range(n)]))
    counts = Counter(split["subjects"].values())
    assert [counts["train"], counts["val"], counts["test"]] == expected


def test_images_without_subject_use_their_id_and_fractions_are_checked(tmp_path):
    store = tmp_path / "ds"
    store.mkdir()
    objects = {"img1": {"image": {"ext": ".png", "info": {}}, "labels": {}}}
    (store / "datastore_v2.json").write_text(json.dumps({"name": "t", "description": "", "objects": objects}))
    assert list(ensure_split(store)["subjects"]) == ["img1"]
    for bad in [(0.5, 0.5), (0.8, 0.3, 0.1), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)]:
        with pytest.raises(ValueError, match="fractions"):
            splits.new_split(["a"], bad)
    with pytest.raises(FileNotFoundError):
        ensure_split(tmp_path / "nowhere")


def test_write_is_atomic(tmp_path, monkeypatch):
    store = _datastore(tmp_path / "ds", SUBJECTS)
    ensure_split(store)
    before = (store / "split.json").read_bytes()
    _datastore(store, ["newcomer"])

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        ensure_split(store)
    assert (store / "split.json").read_bytes() == before
    assert sorted(p.name for p in store.iterdir()) == ["datastore_v2.json", "split.json", "split.json.lock"]


def test_a_broken_split_file_is_named(tmp_path):
    store = _datastore(tmp_path / "ds", SUBJECTS)
    (store / "split.json").write_text('{"seed": 0, "fractions": [1, 0, 0], "subjects": {"a": "holdout"}}')
    with pytest.raises(ValueError, match="split.json"):
        load_split(store)


def test_split_of_the_sample_datastore(tmp_path):
    from mri_label.sample_data import write_sample_data

    write_sample_data(tmp_path / "ds")
    split = ensure_split(tmp_path / "ds")
    assert set(split["subjects"]) == {f"synth0{i}" for i in range(1, 7)} | {f"synth_hippo0{i}" for i in range(1, 5)} | {
        f"synth_slice0{i}" for i in range(1, 5)
    }


def test_random_image_split_is_a_second_file_keyed_by_image_id(tmp_path):
    store = _datastore(tmp_path / "ds", SUBJECTS, images_per_subject=3)
    grouped = ensure_split(store)
    before = (store / "split.json").read_bytes()
    random = ensure_split(store, unit="image")
    images = [f"{s}_img{k}" for s in SUBJECTS for k in range(3)]
    assert random["unit"] == "image" and sorted(random["subjects"]) == sorted(images)
    assert Counter(random["subjects"].values()) == {"train": 210, "val": 45, "test": 45}
    assert (store / "split.json").read_bytes() == before and load_split(store) == grouped
    assert load_split(store, unit="image") == random == ensure_split(store, unit="image")
    # images of one subject are spread over the sides: what a random split does to near-duplicates
    assert any(len({random["subjects"][f"{s}_img{k}"] for k in range(3)}) > 1 for s in SUBJECTS)
    # the same partition as split.json of a datastore whose images are their own subjects
    alone = _datastore(tmp_path / "alone", images, images_per_subject=1)
    assert ensure_split(alone)["subjects"] == random["subjects"]
    with pytest.raises(ValueError, match="unit"):
        ensure_split(store, unit="patient")


def test_pin_split_puts_a_cards_subjects_on_its_sides_and_keeps_the_rest(tmp_path):
    """A datastore whose split was made over another import order: the card's train/val/test lists win, subjects the
    card does not name keep their side, and a second pin moves nothing."""
    store = _datastore(tmp_path / "ds", SUBJECTS)
    before = ensure_split(store)["subjects"]
    test, train = [s for s in SUBJECTS if before[s] == "train"][:3], [s for s in SUBJECTS if before[s] == "test"][:2]
    card = {"train_subjects": train + ["not_in_store"], "val_subjects": [], "test_subjects_held_out": test}
    split = splits.pin_split(store, card)
    assert split["pinned"] == 5 and load_split(store) == split
    assert all(split["subjects"][s] == "test" for s in test) and all(split["subjects"][s] == "train" for s in train)
    assert "not_in_store" not in split["subjects"]
    assert {s: side for s, side in split["subjects"].items() if s not in test + train} == {
        s: side for s, side in before.items() if s not in test + train
    }
    assert splits.pin_split(store, card) == split  # nothing left to move


@pytest.mark.parametrize("card_split", [None, {}, {"source": "split.json", "seed": 0}])
def test_pin_split_refuses_a_card_without_subject_lists(tmp_path, card_split):
    store = _datastore(tmp_path / "ds", SUBJECTS[:10])
    with pytest.raises(ValueError, match="card_split must hold the subject lists"):
        splits.pin_split(store, card_split)

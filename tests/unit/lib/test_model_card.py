"""``model.json`` checks: a checkpoint that does not fit the app's config is refused with the field named."""

import json

import pytest

from lib.model_card import check_checkpoint, mismatches, read_card

EXPECTED = {
    "task": "hippocampus",
    "labels": {"anterior": 1, "posterior": 2},
    "network": {"name": "UNet", "args": {"channels": [16, 32, 64, 128]}},
    "input": {"spacing_mm": [1.0, 1.0, 1.0], "roi": [48, 48, 48]},
}


def write(folder, card):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.pt").write_bytes(b"weights")
    (folder / "model.json").write_text(card if isinstance(card, str) else json.dumps(card))
    return str(folder / "model.pt")


def test_matching_card_passes(tmp_path):
    card = dict(EXPECTED, metrics={"best": 0.8})
    assert check_checkpoint(write(tmp_path / "m", card), EXPECTED, required=True, remedy="")["metrics"] == {"best": 0.8}


@pytest.mark.parametrize(
    "field, value",
    [
        ("task", "tumor_seg"),
        ("labels", {"hippocampus": 1}),
        ("network", {"name": "UNet", "args": {"channels": [8, 16, 32, 64]}}),
        ("input", {"spacing_mm": [2.0, 2.0, 2.0], "roi": [48, 48, 48]}),
    ],
)
def test_mismatch_names_the_field_and_both_values(tmp_path, field, value):
    path = write(tmp_path / "m", dict(EXPECTED, **{field: value}))
    with pytest.raises(
        ValueError, match=rf"model.json does not fit .*{field} is .* in model.json but .* in this app's config.*retrain"
    ):
        check_checkpoint(path, EXPECTED, required=True, remedy="retrain")
    assert [m.split(" ")[0] for m in mismatches(dict(EXPECTED, **{field: value}), EXPECTED)] == [field]


def test_missing_card_only_refused_when_required(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"weights")
    assert check_checkpoint(str(folder / "model.pt"), EXPECTED, required=False, remedy="") is None
    with pytest.raises(ValueError, match="has no model.json"):
        check_checkpoint(str(folder / "model.pt"), EXPECTED, required=True, remedy="")


@pytest.mark.parametrize("content, message", [("{not json", "not valid JSON"), ("[1, 2]", "JSON object")])
def test_unreadable_card_is_refused(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        read_card(write(tmp_path / "m", content))

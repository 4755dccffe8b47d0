"""mri_label.sources: an image's source and kind of input, for the evaluation's breakdowns."""

import re

import pytest

from mri_label.sources import SKULL_STRIPPED_SOURCES, image_source, input_groups, is_skull_stripped


@pytest.mark.parametrize(
    "info, source, stripped",
    [
        ({"source": "brats"}, "brats", True),  # the default of BraTS
        ({"source": "lgg"}, "lgg", False),
        ({"source": "classfolders"}, "classfolders", False),
        ({"source": "decathlon"}, "decathlon", False),
        ({"source": "mri_sequence_2d"}, "mri_sequence_2d", False),
        ({"source": "brats", "skull_stripped": False}, "brats", False),  # the image's own key wins
        ({"source": "lgg", "skull_stripped": True}, "lgg", True),
        ({"synthetic": True}, "synthetic", False),
        ({}, "unknown", False),
        (None, "unknown", False),
    ],
)
def test_source_and_skull_default_by_source(info, source, stripped):
    assert image_source(info) == source and is_skull_stripped(info) is stripped


def test_the_default_lives_in_one_set():
    assert SKULL_STRIPPED_SOURCES == frozenset({"brats"})


@pytest.mark.parametrize("ndim, dims", [(2, "2D slice"), (3, "volume")])
def test_input_groups(ndim, dims):
    assert input_groups({"source": "brats"}, ndim) == {"source": "brats", "dims": dims, "skull": "skull-stripped"}


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: input_groups({}, 4), "ndim: expected 2 or 3"),
        (lambda: is_skull_stripped({"skull_stripped": "yes"}), "info['skull_stripped']"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()

"""Where an image comes from and what kind of input it is, read from its datastore info.

The importers (:mod:`mri_label.importers`) write ``info["source"]`` (the import format: ``lgg``, ``brats``,
``classfolders``, ``decathlon``, ...); the synthetic sample data has ``info["synthetic"]`` instead. An image may
carry ``info["skull_stripped"]`` (bool); where it does not, :data:`SKULL_STRIPPED_SOURCES` gives the default by
source. That set is the ONE place of the default: importers that want to write the key read it from here.

The evaluation (:mod:`mri_label.evaluate`) breaks its figures down along :data:`BREAKDOWNS`:

* ``source``: :func:`image_source`;
* ``dims``: ``"volume"`` (a 3-D image) or ``"2D slice"`` (a 2-D picture, e.g. a JPEG or PNG slice);
* ``skull``: ``"skull-stripped"`` or ``"with skull"`` (:func:`is_skull_stripped`).
"""

from __future__ import annotations

from typing import Mapping

#: Sources whose images are skull-stripped by default (BraTS is published brain-extracted); every other source,
#: the synthetic phantoms included, has the skull unless an image's ``info["skull_stripped"]`` says otherwise.
SKULL_STRIPPED_SOURCES = frozenset({"brats"})
#: The breakdowns of an evaluation, in report order.
BREAKDOWNS = ("source", "dims", "skull")
DIMS = {2: "2D slice", 3: "volume"}


def image_source(info: Mapping | None) -> str:
    """``info["source"]``; ``"synthetic"`` for the sample phantoms; ``"unknown"`` where neither is set."""
    info = info or {}
    return str(info.get("source") or ("synthetic" if info.get("synthetic") else "unknown"))


def is_skull_stripped(info: Mapping | None) -> bool:
    """``info["skull_stripped"]`` when the image carries it, else whether its source is in
    :data:`SKULL_STRIPPED_SOURCES`.

    Raises:
        ValueError: ``info["skull_stripped"]`` is set but not a bool.
    """
    info = info or {}
    value = info.get("skull_stripped")
    if value is None:
        return image_source(info) in SKULL_STRIPPED_SOURCES
    if not isinstance(value, bool):
        raise ValueError(f"info['skull_stripped']: expected true or false; got {value!r}")
    return value


def input_groups(info: Mapping | None, ndim: int) -> dict[str, str]:
    """The image's group in each of :data:`BREAKDOWNS`.

    Args:
        info: the image's datastore info.
        ndim: number of spatial dimensions of the image file, 2 (a slice) or 3 (a volume).

    Returns:
        ``{"source": ..., "dims": "volume" | "2D slice", "skull": "skull-stripped" | "with skull"}``.
    """
    if ndim not in DIMS:
        raise ValueError(f"ndim: expected 2 or 3 spatial dimensions; got {ndim!r}")
    return {
        "source": image_source(info),
        "dims": DIMS[ndim],
        "skull": "skull-stripped" if is_skull_stripped(info) else "with skull",
    }

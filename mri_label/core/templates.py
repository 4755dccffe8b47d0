"""The MNI152 T1 template, taken from the installed nilearn wheel (nilearn itself is not imported; nothing
downloads)."""

import importlib.util
import os

TEMPLATE_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
"""ICBM 2009a symmetric MNI152 T1 (1 mm, brain-extracted, RAS), as bundled in nilearn's ``datasets/data``."""


def template_path() -> str:
    """Path of the MNI152 T1 template inside the installed nilearn package.

    Raises:
        RuntimeError: nilearn is not installed, or its wheel lacks the template.
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nilearn is not installed: the whole-head hippocampus path needs its MNI152 template")
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", TEMPLATE_FILE)
    if not os.path.isfile(path):
        raise RuntimeError(f"the MNI152 template is missing from the nilearn package: {path}")
    return path

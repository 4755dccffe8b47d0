"""A real server for the Slicer module's history, review and panel-logic tests: ``tumor_seg`` only, at 64 px so that a
1-epoch fine-tune is quick, one per test module."""

import pytest

from tests.helpers.live_server import running_server


@pytest.fixture(scope="module")
def tumor_seg_server(request, tmp_path_factory, sample_template):
    conf = {"models": "tumor_seg", "tumor_seg_image_size": "64"}
    folder = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    with running_server(folder, sample_template, conf=conf) as live:
        yield live

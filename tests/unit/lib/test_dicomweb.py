"""The PACS datastore's pieces without a PACS: search filter, segment naming, UID check, grid check, the label's task,
the STOW-RS confirmation of a SEG and its SR."""

import pytest
import SimpleITK as sitk

from lib.dicomweb import _same_grid, is_uid, label_task, search_filter, segment_info

TASKS = {"tumor_seg": {"tumor": 1}, "hippocampus": {"anterior": 1, "posterior": 2}}


def test_search_filter_defaults_to_mr_and_takes_the_conf_option():
    assert search_filter({})["Modality"] == "MR"
    assert search_filter({"dicomweb_modality": "ct"})["Modality"] == "CT"
    assert "Modality" not in search_filter({"dicomweb_modality": "any"})


@pytest.mark.parametrize("value", ["M R", "MR\\CT", "x" * 17, "MR;DROP"])
def test_search_filter_refuses_what_is_not_a_modality(value):
    with pytest.raises(ValueError, match="dicomweb_modality"):
        search_filter({"dicomweb_modality": value})


def test_uid_check():
    assert is_uid("1.2.840.10008.5.1.4.1.1.4")
    for bad in ("", "../etc", "1..2", "1.2.a", "1." * 40, None):
        assert not is_uid(bad)


def test_segment_names_from_the_task():
    names = [s["name"] for s in segment_info([1, 2], {"task": "hippocampus"}, TASKS)]
    assert names == ["anterior", "posterior"]
    assert segment_info([1], {"model": "tumor_seg"}, TASKS)[0]["model_name"] == "tumor_seg"
    assert segment_info([1], {}, {"tumor_seg": {"tumor": 1}})[0]["name"] == "tumor"  # the only task served
    assert segment_info([1, 4], {}, TASKS)[1]["name"] == "segment 4"  # no task known


def test_segment_names_from_the_viewer_win_and_follow_idx():
    info = {
        "task": "tumor_seg",
        "label_info": [{"name": "edema", "idx": 3, "color": [0, 255, 0]}, {"name": "core", "idx": 1}],
    }
    segments = segment_info([1, 3], info, TASKS)
    assert [s["name"] for s in segments] == ["core", "edema"]
    assert segments[1]["color"] == [0, 255, 0]
    unindexed = segment_info([2, 5], {"label_info": [{"name": "background"}, {"name": "a"}, {"name": "b"}]}, TASKS)
    assert [s["name"] for s in unindexed] == ["a", "b"]


def test_same_grid():
    image = sitk.Image(8, 8, 4, sitk.sitkUInt8)
    image.SetSpacing((1.0, 1.0, 3.0))
    label = sitk.Image(image)
    assert _same_grid(label, image)
    label.SetOrigin((0.0, 0.0, 1.0))
    assert not _same_grid(label, image)
    assert not _same_grid(sitk.Image(8, 8, 3, sitk.sitkUInt8), image)


def test_a_pacs_that_does_not_answer_gives_502(tmp_path):
    from fastapi import HTTPException
    from monailabel.datastore.dicom import DICOMwebClientX

    from lib.dicomweb import MRIDICOMwebDatastore
    from tests.helpers.live_server import free_port

    client = DICOMwebClientX(url=f"http://127.0.0.1:{free_port()}/dicom-web")
    client.set_http_retry_params(retry=False)  # dicomweb-client would retry a refused connection for ~30 s
    datastore = MRIDICOMwebDatastore(client, {"Modality": "MR"}, cache_path=str(tmp_path))
    try:
        for call in (datastore.list_images, lambda: datastore.get_image_uri("1.2.3.4")):
            with pytest.raises(HTTPException) as error:
                call()
            assert error.value.status_code == 502 and "PACS" in error.value.detail
        assert datastore.get_image_uri("../x") == ""
    finally:
        if getattr(datastore, "_observer", None) is not None:
            datastore._observer.stop()


def test_a_pacs_that_stops_answering_gives_502_within_the_time_limit(tmp_path, monkeypatch):
    """The connection is accepted, the request read, and no answer ever comes."""
    import socket
    import time

    from fastapi import HTTPException

    from lib import dicomweb

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    monkeypatch.setattr(dicomweb, "PACS_TIMEOUT_S", (2.0, 1.0))
    client = dicomweb.dicomweb_client(f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web")
    assert isinstance(client._session, dicomweb.TimeoutSession) and client._session.timeout == (2.0, 1.0)
    datastore = dicomweb.MRIDICOMwebDatastore(client, {"Modality": "MR"}, cache_path=str(tmp_path))
    try:
        started = time.monotonic()
        with pytest.raises(HTTPException) as error:
            datastore.list_images()
        assert error.value.status_code == 502 and "did not answer" in error.value.detail
        assert time.monotonic() - started < 15
    finally:
        listener.close()
        if getattr(datastore, "_observer", None) is not None:
            datastore._observer.stop()


def test_label_task():
    assert label_task({"task": "hippocampus"}, TASKS) == "hippocampus"
    assert label_task({"model": "tumor_seg"}, TASKS) == "tumor_seg"
    assert label_task({"task": "nope"}, TASKS) is None  # two tasks served, none named
    assert label_task({}, {"tumor_seg": {"tumor": 1}}) == "tumor_seg"


class _StoringClient:
    """A DICOMweb client whose STOW-RS confirms only the first ``confirm`` instances (all when None)."""

    def __init__(self, confirm=None):
        self.confirm, self.requests = confirm, []

    def store_instances(self, datasets):
        import pydicom

        self.requests.append([ds.SOPInstanceUID for ds in datasets])
        answer = pydicom.Dataset()
        items = []
        for ds in datasets[: self.confirm]:
            item = pydicom.Dataset()
            item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
            items.append(item)
        answer.ReferencedSOPSequence = items
        return answer


def _datastore(tmp_path, **kwargs):
    from monailabel.datastore.dicom import DICOMwebClientX

    from lib.dicomweb import MRIDICOMwebDatastore

    client = DICOMwebClientX(url="http://127.0.0.1:9/dicom-web")
    return MRIDICOMwebDatastore(client, {"Modality": "MR"}, cache_path=str(tmp_path), **kwargs)


def test_seg_and_sr_go_in_one_stow_request_and_both_must_be_confirmed(tmp_path):
    import pydicom
    from fastapi import HTTPException

    datastore = _datastore(tmp_path)
    try:
        instances = []
        for modality, uid in (("SEG", "1.2.3.1"), ("SR", "1.2.3.2")):
            ds = pydicom.Dataset()
            ds.Modality, ds.SOPInstanceUID = modality, uid
            instances.append(ds)
        datastore._client = _StoringClient()
        datastore._stow("1.2.3", instances)
        assert datastore._client.requests == [["1.2.3.1", "1.2.3.2"]]
        datastore._client = _StoringClient(confirm=1)
        with pytest.raises(HTTPException) as refused:
            datastore._stow("1.2.3", instances)
        assert (
            refused.value.status_code == 502 and "did not confirm the DICOM SR of image 1.2.3" in refused.value.detail
        )
    finally:
        if getattr(datastore, "_observer", None) is not None:
            datastore._observer.stop()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"measure": "not callable"}, "measure must be callable"),
        ({"task_labels": TASKS, "lesion_labels": {"tumor_seg": "edema"}}, "lesion_labels['tumor_seg']"),
    ],
)
def test_measuring_arguments_are_checked(tmp_path, kwargs, message):
    with pytest.raises(ValueError) as raised:
        _datastore(tmp_path, **kwargs)
    assert message in str(raised.value)

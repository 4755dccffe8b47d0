"""Issue 18 item 4 (panel side), without Slicer and without a server: what MRILabelLib's client sends for a voxel
uncertainty map and what ServerLogic makes of the answers a server can give (the map with its summary, an unreadable
summary, a task's usual answer, a refusal). The real server's answer: tests/integration/slicer_module."""

import json
import os

import pytest

from MRILabelLib import ServerLogic, plain_sentence
from MRILabelLib import multipart as multipart_codec
from MRILabelLib.client import Response, ServerClient
from MRILabelLib.errors import ServerHTTPError, UnexpectedAnswerError
from MRILabelLib.results import UNREADABLE_SUMMARY, UncertaintyMap

SUMMARY = {
    "measure": "normalised predictive entropy",
    "mean": 0.04,
    "max": 0.9,
    "uncertain_fraction": 0.01,
    "uncertain_from": 0.5,
    "axis": 2,
    "slices": [{"slice": 9, "uncertain_voxels": 120, "mean": 0.2}, {"slice": 8, "uncertain_voxels": 3, "mean": 0.1}],
}
INFO = {
    "models": {
        "tumor_seg": {"type": "segmentation", "labels": {"tumor": 1}},
        "hippocampus": {"type": "segmentation", "labels": {"anterior": 1, "posterior": 2}},
        "tumor_pipeline": {"type": "segmentation", "labels": {"tumor": 1}},
        "tumor_gate": {"type": "classification", "labels": {"no_tumor": 0, "tumor": 1}},
        "old_seg": {"type": "segmentation", "labels": {"x": 1}, "uncertainty": False},
    },
    "trainers": {"tumor_seg": {}},
}


def _multipart(result, image=b"\x1f\x8b fake map"):
    body, content_type = multipart_codec.encode(
        {"params": json.dumps(result)}, {"image": ("tmpab12.nii.gz", image)} if image is not None else {}
    )
    return Response(200, {"content-type": content_type}, body)


class ScriptedClient(ServerClient):
    """A ServerClient whose requests are answered from a script (no network): ``/info/``, the image check, and the
    given infer answer (a Response, or an exception to raise)."""

    def __init__(self, infer_answer):
        super().__init__("http://127.0.0.1:9", retries=0)
        self.infer_answer, self.sent = infer_answer, []

    def request(self, method, path, query=None, json_body=None, form=None, files=None, timeout_s=None, _auth=True):
        self.sent.append((method, path, dict(query or {}), dict(form or {})))
        if path == "/info/":
            return Response(200, {"content-type": "application/json"}, json.dumps(INFO).encode())
        if path == "/datastore/image":
            return Response(200, {}, b"")
        if isinstance(self.infer_answer, Exception):
            raise self.infer_answer
        return self.infer_answer


def _logic(tmp_path, answer):
    client = ScriptedClient(answer)
    return ServerLogic(client=client, work_dir=str(tmp_path)), client


def test_the_client_asks_one_inference_for_map_and_summary(tmp_path):
    client = ScriptedClient(_multipart({"uncertainty": SUMMARY}))
    result, path = client.uncertainty_map("tumor_seg", "synth01_flair", folder=str(tmp_path))
    ((method, route, query, form),) = client.sent
    assert (method, route) == ("POST", "/infer/tumor_seg")
    assert query == {"image": "synth01_flair", "output": "all"}  # the map file and the JSON in one answer
    assert json.loads(form["params"]) == {"uncertainty": True}  # a JSON boolean (anything else is a 422)
    assert result == {"uncertainty": SUMMARY}
    assert os.path.dirname(path) == str(tmp_path) and path.endswith(".nii.gz")
    assert open(path, "rb").read() == b"\x1f\x8b fake map"


def test_the_map_comes_with_its_summary(tmp_path):
    logic, client = _logic(tmp_path, _multipart({"uncertainty": SUMMARY, "checkpoint": {}}))
    messages = []
    answer = logic.uncertainty_map("tumor_seg", "synth01_flair", progress=lambda m, f=None, d=None: messages.append(m))
    assert isinstance(answer, UncertaintyMap) and answer.task == "tumor_seg" and os.path.isfile(answer.path)
    assert answer.summary.axis == 2 and [s.slice for s in answer.summary.slices] == [9, 8]
    assert answer.message().startswith("Correct first: slice 9 (120 uncertain voxels), slice 8 (3 uncertain voxels).")
    assert messages == ["Asking tumor_seg for its uncertainty map on synth01_flair"]


def test_an_unreadable_summary_keeps_the_map_and_says_why(tmp_path):
    logic, _ = _logic(tmp_path, _multipart({"uncertainty": {**SUMMARY, "slices": "9, 8"}}))
    answer = logic.uncertainty_map("hippocampus", "synth_hippo01_t1")
    assert answer.summary is None and os.path.isfile(answer.path)
    assert answer.problem == f"{UNREADABLE_SUMMARY}: slices must be a list, got str."


@pytest.mark.parametrize("task", ["tumor_gate", "old_seg"])
def test_tasks_that_offer_no_map_are_refused_before_anything_is_sent(tmp_path, task):
    logic, client = _logic(tmp_path, AssertionError("nothing may be sent"))
    with pytest.raises(ValueError) as caught:
        logic.uncertainty_map(task, "synth01_flair")
    assert plain_sentence(caught.value) == (
        f"{task} does not give uncertainty maps; choose a segmentation task that does (on an mri-label server: "
        "tumor_seg or hippocampus)."
    )
    assert [path for _, path, _, _ in client.sent] == ["/info/"]


def test_a_task_answering_its_usual_result_gives_a_sentence_and_no_map(tmp_path):
    # tumor_pipeline hands the option to its tumor_seg stage but answers without the summary: nothing is shown
    logic, _ = _logic(tmp_path, _multipart({"label_names": {"tumor": 1}, "tumor": True}, image=b"mask"))
    with pytest.raises(ValueError) as caught:
        logic.uncertainty_map("tumor_pipeline", "synth02_flair")
    assert plain_sentence(caught.value) == (
        "tumor_pipeline answered without an uncertainty summary, so this server does not give uncertainty maps for "
        "it; on an mri-label server tumor_seg and hippocampus do."
    )
    assert os.listdir(tmp_path) == []  # the mask it wrote is gone


def test_a_summary_without_the_map_file_is_an_unexpected_answer(tmp_path):
    logic, _ = _logic(tmp_path, Response(200, {"content-type": "application/json"}, b'{"uncertainty": {}}'))
    with pytest.raises(UnexpectedAnswerError) as caught:
        logic.uncertainty_map("tumor_seg", "synth01_flair")
    assert "tumor_seg answered an uncertainty summary without the map file" in plain_sentence(caught.value)


def test_the_servers_refusal_is_its_own_sentence(tmp_path):
    refusal = ServerHTTPError(422, "params uncertainty must be true or false, got 'yes'", "POST", "/infer/tumor_seg")
    logic, _ = _logic(tmp_path, refusal)
    with pytest.raises(ServerHTTPError) as caught:
        logic.uncertainty_map("tumor_seg", "synth01_flair")
    assert plain_sentence(caught.value) == (
        "The server refused the request: params uncertainty must be true or false, got 'yes'."
    )

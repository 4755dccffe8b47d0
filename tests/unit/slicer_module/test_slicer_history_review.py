"""Issue 18 item 4 (panel side of model history and review), without Slicer and without a server: what MRILabelLib's
client sends to ``/mri/history``, ``/mri/rollback``, ``/mri/review`` and ``/datastore/label``; how ServerLogic turns
the answers into table rows, list entries and sentences; the checks made before a decision is sent; and malformed
answers, each one plain sentence. The real server's answers: tests/integration/slicer_module."""

import json
import os

import pytest

from MRILabelLib import ServerLogic, plain_sentence
from MRILabelLib.client import Response, ServerClient
from MRILabelLib.errors import ServerHTTPError, UnexpectedAnswerError
from MRILabelLib.history import ModelHistory, parse_history, parse_rollback, rollback_question
from MRILabelLib.review import (
    MAX_COMMENT,
    ReviewDecision,
    ReviewList,
    check_comment,
    parse_decision,
    parse_reviews,
    review_state,
)

SERVED = {"name": "model/tumor_seg/model.pt", "modified": "2025-01-31T13:00:00", "mtime": 1738328400.0}
PROMOTED = {
    "event": "promoted",
    "time": "2025-01-31T12:00:00Z",
    "metric": "val_mean_dice",
    "metric_before": 0.41,
    "metric_after": 0.4385,
    "reason": "validation metric 0.4385 >= served checkpoint's 0.4100",
    "archive": "20250131T120000.000001Z",
    "run": "r1",
    "promoted": True,
}
KEPT = {
    "event": "kept",
    "time": "2025-01-30T09:00:00Z",
    "metric": "val_mean_dice",
    "metric_before": 0.41,
    "metric_after": None,
    "reason": "no validation metric on the fixed split to compare with (no validation items); served checkpoint kept",
    "archive": None,
}
ROLLED_BACK = {
    "event": "rolled back",
    "time": "2025-02-01T08:30:00Z",
    "by": "adam.admin",
    "restored": "20250131T120000.000001Z",
    "archive": "20250201T083000.000002Z",
    "from": SERVED,
    "to": SERVED,
}
HISTORY = {"task": "tumor_seg", "served": SERVED, "entries": [ROLLED_BACK, PROMOTED, KEPT]}
REVIEWED = {
    "status": "approved",
    "comment": "clean margins",
    "reviewer": "rita.reviewer",
    "time": "2025-02-01T10:00:00Z",
}
REVIEWS = {
    "status": None,
    "count": 3,
    "images": [
        {"image": "synth01_flair", "task": "tumor_seg", "status": "approved", "review": REVIEWED},
        {"image": "synth_hippo01_t1", "task": "hippocampus", "status": "pending", "review": None},
        {"image": "old_case", "task": None, "status": "pending", "review": None},
    ],
}
INFO = {
    "models": {
        "tumor_seg": {"type": "segmentation", "labels": {"tumor": 1}},
        "hippocampus": {"type": "segmentation", "labels": {"anterior": 1, "posterior": 2}},
    },
    "trainers": {"tumor_seg": {}, "hippocampus": {}},
}


def _json(value, status=200):
    return Response(status, {"content-type": "application/json"}, json.dumps(value).encode())


class ScriptedClient(ServerClient):
    """A ServerClient whose requests are answered from ``answers`` (path -> Response or exception; ``/info/``
    built in), recording what was sent (no network)."""

    def __init__(self, answers=None):
        super().__init__("http://127.0.0.1:9", retries=0)
        self.answers, self.sent = dict(answers or {}), []

    def request(self, method, path, query=None, json_body=None, form=None, files=None, timeout_s=None, _auth=True):
        self.sent.append((method, path, dict(query or {}), json_body))
        if path == "/info/":
            return _json(INFO)
        answer = self.answers.get(path)
        if answer is None:
            raise AssertionError(f"nothing may be sent to {method} {path}")
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _logic(tmp_path, answers=None):
    client = ScriptedClient(answers)
    return ServerLogic(client=client, work_dir=str(tmp_path)), client


def _sentence(callable_, *args):
    with pytest.raises(Exception) as caught:
        callable_(*args)
    return plain_sentence(caught.value)


# --- model history ---------------------------------------------------------------------------------------------------


def test_history_entries_become_rows_newest_first_with_the_served_line():
    history = parse_history(HISTORY)
    assert [row.cells() for row in history.rows] == [
        (
            "2025-02-01 08:30:00 UTC",
            "rolled back",
            "–",
            "served the checkpoint archived as 20250131T120000.000001Z again (by adam.admin); "
            "the checkpoint it replaced is archived as 20250201T083000.000002Z",
        ),
        (
            "2025-01-31 12:00:00 UTC",
            "promoted",
            "val_mean_dice: 0.4100 → 0.4385",
            "validation metric 0.4385 >= served checkpoint's 0.4100; the checkpoint it replaced is archived as "
            "20250131T120000.000001Z",
        ),
        ("2025-01-30 09:00:00 UTC", "kept", "val_mean_dice: 0.4100 → –", KEPT["reason"]),
    ]
    assert history.served_line() == "tumor_seg serves model/tumor_seg/model.pt (written 2025-01-31 13:00:00)."
    assert history.sentence() == "Model history of tumor_seg: 3 entries, newest first."
    assert history.newest_archive == "20250201T083000.000002Z"


def test_an_empty_history_and_a_task_serving_nothing():
    history = parse_history({"task": "hippocampus", "served": None, "entries": []})
    assert history.rows == [] and history.newest_archive is None
    assert history.served_line() == "hippocampus serves no checkpoint yet (train it first)."
    assert history.sentence() == "hippocampus has no model history yet: no fine-tune run or rollback so far."


def test_unknown_keys_and_events_are_shown_as_sent():
    entry = {"event": "imported", "time": "2025-01-01T00:00:00", "future": [1, 2], "archive": None}
    (row,) = parse_history({"task": "x", "served": None, "entries": [entry], "extra": 1}).rows
    assert row.cells() == ("2025-01-01 00:00:00", "imported", "–", "")


@pytest.mark.parametrize(
    "answer, what",
    [
        (["not", "a", "mapping"], "the model history must be a mapping, got ['not', 'a', 'mapping']"),
        ({"task": "tumor_seg", "served": None}, "the model history's entries must be a list, got None"),
        ({"served": None, "entries": "promoted"}, "the model history's entries must be a list, got 'promoted'"),
        ({"served": None, "entries": [5]}, "entries[0] must be a mapping, got 5"),
        ({"served": None, "entries": [{"time": "2025-01-31T12:00:00Z"}]}, "entries[0].event must be a text, got None"),
        (
            {"served": None, "entries": [{**PROMOTED, "metric_after": "0.5"}]},
            "entries[0].metric_after must be a number",
        ),
        (
            {"served": None, "entries": [{**PROMOTED, "metric_before": True}]},
            "entries[0].metric_before must be a number",
        ),
        (
            {"served": None, "entries": [{**PROMOTED, "metric_after": float("nan")}]},
            "entries[0].metric_after must be a number, got nan",
        ),
        ({"served": None, "entries": [KEPT, {**PROMOTED, "time": 17}]}, "entries[1].time must be a text, got 17"),
        ({"served": None, "entries": [{**ROLLED_BACK, "by": ["adam"]}]}, "entries[0].by must be a text"),
        ({"served": "model.pt", "entries": []}, "served must be a checkpoint description or null, got 'model.pt'"),
        ({"served": {"mtime": 1.0}, "entries": []}, "served.name must be a text, got None"),
        ({"served": {"name": "m.pt", "mtime": "yesterday"}, "entries": []}, "served.mtime must be a number"),
    ],
)
def test_a_malformed_history_is_one_plain_sentence(tmp_path, answer, what):
    logic, _ = _logic(tmp_path, {"/mri/history/tumor_seg": _json(answer)})
    sentence = _sentence(logic.model_history, "tumor_seg")
    assert sentence.startswith(f"The server gave an answer this module does not understand ({what}")
    assert sentence.endswith("check that the address is an mri-label server.") and "\n" not in sentence


def test_the_client_reads_the_history_of_the_task_it_is_given(tmp_path):
    logic, client = _logic(tmp_path, {"/mri/history/tumor%20seg": _json(HISTORY)})
    assert isinstance(logic.model_history("tumor seg"), ModelHistory)
    assert client.sent == [("GET", "/mri/history/tumor%20seg", {}, None)]  # quoted into the path


def test_no_task_chosen_sends_nothing(tmp_path):
    logic, client = _logic(tmp_path)
    for call in (logic.model_history, logic.roll_back):
        assert _sentence(call, "").startswith("task must be a task of the server (choose one in Model history)")
    assert client.sent == []


def test_a_server_without_the_routes_says_so(tmp_path):
    missing = ServerHTTPError(404, "Not Found", "GET", "/mri/history/tumor_seg")
    logic, _ = _logic(tmp_path, {"/mri/history/tumor_seg": missing})
    assert _sentence(logic.model_history, "tumor_seg") == (
        "This server has no model history (GET /mri/history/tumor_seg does not exist); it needs an mri-label server "
        "with model history and review."
    )
    unknown = ServerHTTPError(404, "no task 'tumor_pipeline' here; tasks: ['tumor_seg']", "GET", "/mri/history/x")
    logic, _ = _logic(tmp_path, {"/mri/history/tumor_pipeline": unknown})
    assert _sentence(logic.model_history, "tumor_pipeline") == (
        "The server refused the request: no task 'tumor_pipeline' here; tasks: ['tumor_seg']."
    )


def test_rollback_posts_and_its_answer_is_one_sentence(tmp_path):
    answer = {"task": "tumor_seg", "served": SERVED, "entry": ROLLED_BACK}
    logic, client = _logic(tmp_path, {"/mri/rollback/tumor_seg": _json(answer)})
    result = logic.roll_back("tumor_seg")
    assert client.sent == [("POST", "/mri/rollback/tumor_seg", {}, None)]
    assert result.sentence() == (
        "tumor_seg was rolled back: it serves the checkpoint archived as 20250131T120000.000001Z again "
        "(model/tumor_seg/model.pt (written 2025-01-31 13:00:00)); the one it replaced is archived as "
        "20250201T083000.000002Z."
    )


@pytest.mark.parametrize(
    "answer, what",
    [
        ("rolled back", "the rollback answer must be a mapping, got 'rolled back'"),
        ({"task": "tumor_seg", "served": SERVED}, "entry must be a mapping, got None"),
        ({"served": SERVED, "entry": {**ROLLED_BACK, "restored": 3}}, "entry.restored must be a text, got 3"),
        ({"served": [], "entry": ROLLED_BACK}, "served must be a checkpoint description or null, got []"),
    ],
)
def test_a_malformed_rollback_answer_is_one_plain_sentence(answer, what):
    with pytest.raises(UnexpectedAnswerError) as caught:
        parse_rollback(answer, "tumor_seg")
    assert plain_sentence(caught.value).startswith(f"The server gave an answer this module does not understand ({what}")


@pytest.mark.parametrize(
    "status, detail, sentence",
    [
        (
            403,
            'Role "monailabel-admin" (or a higher one) is required to perform this action',
            'Your account may not do this: Role "monailabel-admin" (or a higher one) is required to perform this '
            "action; ask an administrator for the role.",
        ),
        (
            409,
            "tumor_seg has no archived checkpoint to roll back to",
            "The server refused the request: tumor_seg has no archived checkpoint to roll back to.",
        ),
        (
            409,
            "a training of tumor_seg is running; roll back once it has ended (or stop it)",
            "The server refused the request: a training of tumor_seg is running; roll back once it has ended (or stop "
            "it).",
        ),
    ],
)
def test_rollback_refusals_are_the_servers_sentence(tmp_path, status, detail, sentence):
    refusal = ServerHTTPError(status, detail, "POST", "/mri/rollback/tumor_seg")
    logic, _ = _logic(tmp_path, {"/mri/rollback/tumor_seg": refusal})
    assert _sentence(logic.roll_back, "tumor_seg") == sentence


def test_the_rollback_question_names_the_archive_and_what_is_served():
    history = parse_history(HISTORY)
    assert rollback_question("tumor_seg", history) == (
        "Roll tumor_seg back: serve the checkpoint archived as 20250201T083000.000002Z again instead of "
        "model/tumor_seg/model.pt (written 2025-01-31 13:00:00)? Every user's next inference of tumor_seg uses it. "
        "The checkpoint served now is archived, so a second rollback undoes this one."
    )
    # another task's history, or none read yet: the question stays general
    assert rollback_question("hippocampus", history).startswith(
        "Roll hippocampus back: serve its newest archived checkpoint again? "
    )
    assert rollback_question("hippocampus").startswith("Roll hippocampus back: serve its newest archived checkpoint")
    with pytest.raises(ValueError, match="Choose the task to roll back"):
        rollback_question("")


# --- review -----------------------------------------------------------------------------------------------------------


def test_review_entries_become_list_lines():
    items = parse_reviews(REVIEWS)
    assert [item.text() for item in items] == [
        "synth01_flair — tumor_seg — approved by rita.reviewer, 2025-02-01 10:00:00 UTC: clean margins",
        "synth_hippo01_t1 — hippocampus",
        "old_case — no served task",
    ]
    assert items[0].review.comment == "clean margins" and items[2].task is None
    assert ReviewList("pending", items[1:]).sentence() == (
        "2 final labels pending; select one and press Load to see it."
    )
    assert ReviewList("needs_changes", []).sentence() == "No final label is needs changes."
    long = dict(REVIEWED, comment="word " * 100)
    (item,) = parse_reviews({"images": [{"image": "a", "task": "t", "status": "approved", "review": long}]})
    assert len(item.text()) < 170 and item.text().endswith("...")


@pytest.mark.parametrize(
    "answer, what",
    [
        ([], "the review list must be a mapping, got []"),
        ({"count": 0}, "the review list's images must be a list, got None"),
        ({"images": ["synth01_flair"]}, "images[0] must be a mapping, got 'synth01_flair'"),
        ({"images": [{"task": "tumor_seg", "status": "pending"}]}, "images[0].image must be an image id, got None"),
        ({"images": [{"image": "", "status": "pending"}]}, "images[0].image must be an image id, got ''"),
        ({"images": [{"image": "a", "status": "done"}]}, "images[0].status must be one of pending, approved"),
        ({"images": [{"image": "a", "status": "pending", "task": 3}]}, "images[0].task must be a text, got 3"),
        ({"images": [{"image": "a", "status": "approved", "review": "ok"}]}, "images[0].review must be a mapping"),
        (
            {"images": [{"image": "a", "status": "approved", "review": {"status": "pending"}}]},
            "images[0].review.status must be approved or needs_changes, got 'pending'",
        ),
        (
            {"images": [{"image": "a", "status": "approved", "review": {**REVIEWED, "comment": 7}}]},
            "images[0].review.comment must be a text, got 7",
        ),
    ],
)
def test_a_malformed_review_list_is_one_plain_sentence(tmp_path, answer, what):
    logic, _ = _logic(tmp_path, {"/mri/review": _json(answer)})
    sentence = _sentence(logic.reviews, "pending")
    assert sentence.startswith(f"The server gave an answer this module does not understand ({what}")


@pytest.mark.parametrize("answer", [{"image": "a"}, {"image": "a", "review": None}, "approved", {"review": {}}])
def test_a_decision_answer_without_the_stored_review_is_one_plain_sentence(answer):
    with pytest.raises(UnexpectedAnswerError) as caught:
        parse_decision(answer)
    assert plain_sentence(caught.value).startswith("The server gave an answer this module does not understand (")


def test_the_list_asks_for_one_state(tmp_path):
    logic, client = _logic(tmp_path, {"/mri/review": _json(REVIEWS)})
    assert len(logic.reviews("needs changes")) == 3
    assert len(logic.reviews()) == 3
    assert client.sent == [
        ("GET", "/mri/review", {"status": "needs_changes"}, None),  # the panel's "needs changes" is the API's state
        ("GET", "/mri/review", {"status": "pending"}, None),  # pending by default
    ]
    assert client.reviews() == REVIEWS and client.sent[-1] == ("GET", "/mri/review", {}, None)  # no filter: all


def test_a_decision_is_sent_as_json_and_answers_the_stored_review(tmp_path):
    stored = {"image": "synth01_flair", "review": REVIEWED}
    logic, client = _logic(tmp_path, {"/mri/review/synth01_flair": _json(stored)})
    review = logic.review("synth01_flair", "approved", "  clean margins \n")
    assert client.sent == [("PUT", "/mri/review/synth01_flair", {}, {"status": "approved", "comment": "clean margins"})]
    assert review.reviewer == "rita.reviewer" and review.status == "approved"
    listing = ReviewList("pending", [])
    assert ReviewDecision("synth01_flair", review, listing).sentence() == (
        "synth01_flair: approved by rita.reviewer; the list is up to date."
    )


def test_a_comment_of_2000_characters_is_sent_and_one_more_is_refused_before_sending(tmp_path):
    stored = {"image": "synth01_flair", "review": dict(REVIEWED, status="needs_changes", comment="x" * MAX_COMMENT)}
    logic, client = _logic(tmp_path, {"/mri/review/synth01_flair": _json(stored)})
    assert logic.review("synth01_flair", "needs_changes", "x" * MAX_COMMENT).comment == "x" * MAX_COMMENT
    client.sent.clear()
    assert _sentence(logic.review, "synth01_flair", "needs_changes", "x" * (MAX_COMMENT + 1)) == (
        "the review comment is 2,001 characters long; the server takes at most 2,000, so shorten it and send the "
        "decision again."
    )
    assert client.sent == []


@pytest.mark.parametrize(
    "image, status, comment, sentence",
    [
        ("", "approved", "", "Select an image in the review list first."),
        ("synth01_flair", "pending", "", "the review status must be one of approved, needs changes, got 'pending'."),
        ("synth01_flair", "maybe", "", "the review status must be one of approved, needs changes, got 'maybe'."),
        ("synth01_flair", "approved", 5, "the review comment must be a text, got int."),
    ],
)
def test_bad_decisions_are_refused_before_sending(tmp_path, image, status, comment, sentence):
    logic, client = _logic(tmp_path)
    assert _sentence(logic.review, image, status, comment) == sentence
    assert client.sent == []


def test_review_states_and_comments():
    assert [review_state(s) for s in ("pending", "Approved", "needs changes", "needs_changes")] == [
        "pending",
        "approved",
        "needs_changes",
        "needs_changes",
    ]
    with pytest.raises(ValueError, match="must be one of pending, approved, needs changes, got 'done'"):
        review_state("done")
    assert check_comment(None) == "" and check_comment(" ok ") == "ok"
    assert check_comment("é" * MAX_COMMENT) == "é" * MAX_COMMENT  # characters, as the server counts them


@pytest.mark.parametrize(
    "status, detail, sentence",
    [
        (
            403,
            'Role "monailabel-reviewer" (or a higher one) is required to perform this action',
            'Your account may not do this: Role "monailabel-reviewer" (or a higher one) is required to perform this '
            "action; ask an administrator for the role.",
        ),
        (
            404,
            "image 'synth01_t1' has no final label to review",
            "The server refused the request: image 'synth01_t1' has no final label to review.",
        ),
    ],
)
def test_review_refusals_are_the_servers_sentence(tmp_path, status, detail, sentence):
    refusal = ServerHTTPError(status, detail, "PUT", "/mri/review/synth01_t1")
    logic, _ = _logic(tmp_path, {"/mri/review/synth01_t1": refusal, "/mri/review": refusal})
    assert _sentence(logic.review, "synth01_t1", "approved", "") == sentence
    assert _sentence(logic.reviews, "pending") == sentence


# --- loading an image and its final label -----------------------------------------------------------------------------


def _file(name, data, status=200):
    return Response(status, {"content-disposition": f'attachment; filename="{name}"'}, data)


def test_an_image_and_its_final_label_are_downloaded_side_by_side(tmp_path):
    answers = {
        "/datastore/image": _file("synth_hippo01_t1.nii.gz", b"image bytes"),
        "/datastore/label": _file("synth_hippo01_t1.nii.gz", b"label bytes"),
    }
    logic, client = _logic(tmp_path, answers)
    messages = []
    sample = logic.fetch_for_review(
        "synth_hippo01_t1", "hippocampus", progress=lambda m, f=None, d=None: messages.append(m)
    )
    assert ("GET", "/datastore/label", {"label": "synth_hippo01_t1", "tag": "final"}, None) in client.sent
    assert open(sample.image_path, "rb").read() == b"image bytes"
    assert open(sample.label_path, "rb").read() == b"label bytes"  # the same file name: kept apart
    assert os.path.basename(sample.label_path) == "final_label_synth_hippo01_t1.nii.gz"
    assert sample.label_names == {"anterior": 1, "posterior": 2} and sample.task == "hippocampus"
    assert messages == ["Downloading synth_hippo01_t1", "Downloading the final label of synth_hippo01_t1"]


def test_a_label_of_no_served_task_is_fetched_without_names(tmp_path):
    answers = {"/datastore/image": _file("old.nii.gz", b"i"), "/datastore/label": _file("old.nii.gz", b"l")}
    logic, _ = _logic(tmp_path, answers)
    sample = logic.fetch_for_review("old_case", None)
    assert sample.label_names == {} and sample.task is None


def test_a_label_gone_from_the_server_is_a_sentence(tmp_path):
    answers = {
        "/datastore/image": _file("a.nii.gz", b"i"),
        "/datastore/label": ServerHTTPError(404, "Label NOT Found", "GET", "/datastore/label"),
    }
    logic, _ = _logic(tmp_path, answers)
    assert _sentence(logic.fetch_for_review, "synth01_t1", "tumor_seg") == (
        "synth01_t1 has no final label on the server (any more); refresh the review list."
    )
    assert _sentence(logic.fetch_for_review, "", "tumor_seg") == "Select an image in the review list first."

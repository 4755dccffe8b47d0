"""The module's plain logic against a real server with MONAI Label auth on (a fake Keycloak realm on loopback):
it logs in with a user name and password, sends the token, logs in again when the token expires, and turns
401/403 into sentences a clinician can act on."""

import time

import pytest

from MRILabelLib import ServerLogic, plain_sentence
from MRILabelLib.errors import ServerHTTPError

IMAGE = "synth01_t2"


@pytest.fixture
def logic(auth_server, tmp_path):
    return ServerLogic(auth_server["url"], work_dir=str(tmp_path))


def test_an_annotator_signs_in_classifies_and_corrects(logic):
    assert logic.sign_in("ann.annotator", "annotator-pw") is True
    assert {t.name for t in logic.tasks()} == {"sequence", "tumor_type"}
    result = logic.run_task("sequence", IMAGE)
    assert result.label in ("T1", "T2", "FLAIR")
    assert logic.submit_class("sequence", IMAGE, "T2")["label"] == "T2"


def test_without_a_login_the_sentence_asks_for_one(logic):
    with pytest.raises(ServerHTTPError) as refused:
        logic.tasks()
    assert refused.value.status == 401
    assert plain_sentence(refused.value).startswith("This server needs a login")


@pytest.mark.parametrize("username,password", [("ann.annotator", "wrong"), ("nobody", "annotator-pw")])
def test_a_wrong_password_is_named_as_such(logic, username, password):
    with pytest.raises(ServerHTTPError) as refused:
        logic.sign_in(username, password)
    assert refused.value.status == 401
    assert plain_sentence(refused.value).startswith("The server did not accept this user name and password")


@pytest.mark.parametrize("username,password", [("", "annotator-pw"), ("ann.annotator", "")])
def test_missing_credentials_are_asked_for_before_sending(logic, auth_realm, username, password):
    before = len(auth_realm.logins)
    with pytest.raises(ValueError, match="user name and a password"):
        logic.sign_in(username, password)
    assert len(auth_realm.logins) == before


def test_an_expired_token_is_renewed_once_and_the_call_goes_through(logic, auth_realm):
    before = auth_realm.logins.count("short.lived")
    logic.sign_in("short.lived", "short-pw")  # 3-second tokens
    assert logic.tasks(refresh=True)
    time.sleep(4)
    assert logic.tasks(refresh=True)
    assert auth_realm.logins.count("short.lived") == before + 2


def test_a_role_too_low_is_a_sentence_naming_the_role(logic):
    logic.sign_in("short.lived", "short-pw")  # monailabel-user: may infer, may not correct
    with pytest.raises(ServerHTTPError) as refused:
        logic.submit_class("sequence", IMAGE, "T1")
    assert refused.value.status == 403
    sentence = plain_sentence(refused.value)
    assert sentence.startswith("Your account may not do this") and "monailabel-annotator" in sentence


# --- issue 18 item 4: model history (user), rollback (admin), review (reviewer) -----------------------------------


def _refused(call, *args):
    with pytest.raises(ServerHTTPError) as refused:
        call(*args)
    return refused.value.status, plain_sentence(refused.value)


def test_an_annotator_reads_the_history_but_may_neither_roll_back_nor_review(logic):
    logic.sign_in("ann.annotator", "annotator-pw")
    history = logic.model_history("sequence")
    assert history.rows == [] and history.served is not None  # the shipped checkpoint's copy
    status, sentence = _refused(logic.roll_back, "sequence")
    assert status == 403 and sentence.startswith("Your account may not do this") and "monailabel-admin" in sentence
    for call, args in ((logic.reviews, ("pending",)), (logic.review, ("synth01_flair", "approved", "fine"))):
        status, sentence = _refused(call, *args)
        assert status == 403 and sentence == (
            'Your account may not do this: Role "monailabel-reviewer" (or a higher one) is required to perform this '
            "action; ask an administrator for the role."
        )


def test_a_reviewer_approves_with_a_comment_and_an_admin_may_roll_back(auth_server, monkeypatch, tmp_path):
    from monailabel.config import settings

    from tests.helpers.fake_realm import ACCOUNTS, Account

    monkeypatch.setitem(ACCOUNTS, "rita.reviewer", Account("reviewer-pw", [settings.MONAI_LABEL_AUTH_ROLE_REVIEWER]))
    reviewer = ServerLogic(auth_server["url"], work_dir=str(tmp_path))
    reviewer.sign_in("rita.reviewer", "reviewer-pw")
    assert "synth01_flair" in {item.image for item in reviewer.reviews("pending")}
    review = reviewer.review("synth01_flair", "approved", "clean margins")
    assert (review.status, review.reviewer, review.comment) == ("approved", "rita.reviewer", "clean margins")
    (approved,) = [item for item in reviewer.reviews("approved") if item.image == "synth01_flair"]
    assert approved.review.reviewer == "rita.reviewer" and approved.review.comment == "clean margins"
    status, sentence = _refused(reviewer.roll_back, "sequence")  # a reviewer is not an admin
    assert status == 403 and "monailabel-admin" in sentence

    admin = ServerLogic(auth_server["url"], work_dir=str(tmp_path))
    admin.sign_in("adam.admin", "admin-pw")
    status, sentence = _refused(admin.roll_back, "sequence")  # allowed, but nothing was archived
    assert status == 409 and sentence == (
        "The server refused the request: sequence has no archived checkpoint to roll back to."
    )

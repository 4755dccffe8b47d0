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

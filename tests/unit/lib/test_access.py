"""lib.access in process: the realm key refetched when the realm rotates it (not for forged tokens), and the
login route's answers when the realm refuses for another reason or cannot be reached."""

import pytest
from fastapi import HTTPException
from fastapi.security import OAuth2PasswordRequestForm
from monailabel.config import settings

from lib import access
from tests.helpers.fake_realm import ADMIN, ANNOTATOR, FakeRealm, new_key, sign
from tests.helpers.live_server import free_port


@pytest.fixture
def realm(monkeypatch):
    with FakeRealm() as fake:
        monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_REALM_URI", fake.url)
        monkeypatch.setattr(access, "realm_key", access._RealmKey())
        yield fake


def test_a_rotated_realm_key_is_fetched_again(realm, monkeypatch):
    assert access.user_from_token(sign(realm.key, [ADMIN], "adam.admin")).username == "adam.admin"
    realm.key = new_key()  # rotated in the realm
    monkeypatch.setattr(access, "KEY_REFRESH_S", 0.0)
    user = access.user_from_token(sign(realm.key, [ANNOTATOR], "ann.annotator"))
    assert user.roles == [ANNOTATOR] and realm.key_fetches == 2


def test_forged_tokens_do_not_refetch_the_key_more_than_once_a_minute(realm):
    forged = sign(new_key(), [ADMIN], "eve.forger")
    for _ in range(5):
        with pytest.raises(HTTPException) as refused:
            access.user_from_token(forged)
        assert refused.value.status_code == 401
    assert realm.key_fetches == 1


def test_an_unreachable_realm_is_503(monkeypatch):
    monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_REALM_URI", f"http://127.0.0.1:{free_port()}/realms/none")
    monkeypatch.setattr(access, "realm_key", access._RealmKey())
    with pytest.raises(HTTPException) as answer:
        access.user_from_token(sign(new_key(), [ADMIN], "adam.admin"))
    assert answer.value.status_code == 503
    with pytest.raises(HTTPException) as answer:
        access.access_token(OAuth2PasswordRequestForm(username="adam.admin", password="admin-pw"))
    assert answer.value.status_code == 503 and "cannot be reached" in answer.value.detail


def test_a_login_the_realm_refuses_for_its_own_reasons_is_502(realm, monkeypatch):
    monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_CLIENT_ID", "a-client-without-direct-grants")
    with pytest.raises(HTTPException) as answer:
        access.access_token(OAuth2PasswordRequestForm(username="adam.admin", password="admin-pw"))
    assert answer.value.status_code == 502 and "unauthorized_client" in answer.value.detail


@pytest.mark.parametrize("password,status", [("admin-pw", None), ("wrong", 401)])
def test_login_in_process(realm, password, status):
    form = OAuth2PasswordRequestForm(username="adam.admin", password=password)
    if status is None:
        token = access.access_token(form)["access_token"]
        assert access.user_from_token(token).roles == [ADMIN]
    else:
        with pytest.raises(HTTPException) as answer:
            access.access_token(form)
        assert answer.value.status_code == status


@pytest.fixture
def expected(monkeypatch):
    """Restore what tokens must name after a test changes it."""
    monkeypatch.setattr(access, "EXPECTED", dict(access.EXPECTED))
    return access.EXPECTED


TOKENS = [  # (claims given to sign, what the server expects, accepted)
    ({}, {}, True),
    ({"issuer": "http://127.0.0.1:1/realms/other"}, {}, False),
    ({"client": "another-client"}, {}, False),
    ({"client": "viewer"}, {"client": "viewer"}, True),
    ({}, {"audience": "mri-label"}, False),
    ({"audience": "account"}, {"audience": "mri-label"}, False),
    ({"audience": ["account", "mri-label"]}, {"audience": "mri-label"}, True),
    ({"issuer": "https://sso.example/realms/test"}, {"issuer": "https://sso.example/realms/test/"}, True),
]


@pytest.mark.parametrize("claims,wanted,accepted", TOKENS)
def test_tokens_must_name_this_realm_and_client(realm, expected, claims, wanted, accepted):
    access.configure(wanted.get("issuer"), wanted.get("client"), wanted.get("audience"))
    token = sign(realm.key, [ADMIN], "adam.admin", **claims)
    if accepted:
        assert access.user_from_token(token).roles == [ADMIN]
    else:
        with pytest.raises(HTTPException) as refused:
            access.user_from_token(token)
        assert refused.value.status_code == 401


@pytest.mark.parametrize("name,value", [("auth_issuer", " "), ("auth_client_id", ""), ("auth_audience", 5)])
def test_configure_validates(expected, name, value):
    arguments = {"auth_issuer": "issuer", "auth_client_id": "client", "auth_audience": "audience"}
    with pytest.raises(ValueError, match=name):
        access.configure(**{arguments[name]: value})

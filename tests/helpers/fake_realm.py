"""A stand-in for a Keycloak realm on a loopback port, for the access-control tests: keys generated here.

It answers what the server asks a realm for: ``GET /realms/test`` (the public key, base64 DER, as Keycloak
gives it), ``GET /realms/test/.well-known/openid-configuration`` (the token endpoint) and
``POST /realms/test/protocol/openid-connect/token`` (the password grant: a signed token for a known user and
password, else Keycloak's ``invalid_grant`` 401; ``unauthorized_client`` 400 for another client id).
"""

import base64
import json
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Dict, List, NamedTuple

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helpers.loopback import LoopbackServer

ADMIN, ANNOTATOR, USER = "monailabel-admin", "monailabel-annotator", "monailabel-user"
CLIENT_ID = "monailabel-app"  # MONAI Label's default MONAI_LABEL_AUTH_CLIENT_ID


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


#: Every realm made here, newest last (:func:`sign` names the one whose key signs as the token's issuer).
_REALMS: List["FakeRealm"] = []


def sign(
    key,
    roles: List[str],
    username: str,
    expires_in: float = 600,
    issuer: str = None,
    client: str = CLIENT_ID,
    audience=None,
) -> str:
    """A Keycloak-like access token: ``iss`` (the realm whose key ``key`` is, else the newest realm), ``azp``
    (the client it was issued to), ``aud`` when given, ``preferred_username`` and ``realm_access.roles``, RS256."""
    now = int(time.time())
    if issuer is None:
        issuer = next(
            (r.url for r in reversed(_REALMS) if r.key is key), _REALMS[-1].url if _REALMS else "http://no-realm"
        )
    claims = {
        "exp": now + int(expires_in),
        "iat": now,
        "iss": issuer,
        "azp": client,
        "preferred_username": username,
        "realm_access": {"roles": roles},
    }
    if audience is not None:
        claims["aud"] = audience
    return jwt.encode(claims, key, algorithm="RS256")


class Account(NamedTuple):
    password: str
    roles: List[str]
    token_lifetime_s: float = 600


#: The realm's users (user name -> account).
ACCOUNTS: Dict[str, Account] = {
    "ann.annotator": Account("annotator-pw", [ANNOTATOR]),
    "adam.admin": Account("admin-pw", [ADMIN]),
    "short.lived": Account("short-pw", [USER], token_lifetime_s=3),  # Keycloak's default is 300 s
}


class FakeRealm:
    """The realm server. ``key`` signs tokens and is published; assign a new one to rotate it.

    Attributes:
        url: the realm URL (``MONAI_LABEL_AUTH_REALM_URI``).
        key_fetches: how many times the public key was asked for.
        logins: user names of the password grants asked for, in order.
    """

    def __init__(self, key=None):
        self.key = key or new_key()
        self.key_fetches, self.logins = 0, []
        realm = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = self.path.rstrip("/")
                if path == "/realms/test":
                    realm.key_fetches += 1
                    return self._answer(200, {"realm": "test", "public_key": realm.public_key()})
                if path == "/realms/test/.well-known/openid-configuration":
                    return self._answer(
                        200, {"issuer": realm.url, "token_endpoint": realm.url + "/protocol/openid-connect/token"}
                    )
                self._answer(404, {"error": "not found"})

            def do_POST(self):
                if self.path != "/realms/test/protocol/openid-connect/token":
                    return self._answer(404, {"error": "not found"})
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
                field = {k: v[0] for k, v in form.items()}
                if field.get("client_id") != CLIENT_ID or field.get("grant_type") != "password":
                    return self._answer(400, {"error": "unauthorized_client", "error_description": "no direct grants"})
                realm.logins.append(field.get("username"))
                account = ACCOUNTS.get(field.get("username", ""))
                if account is None or account.password != field.get("password"):
                    return self._answer(
                        401, {"error": "invalid_grant", "error_description": "Invalid user credentials"}
                    )
                token = sign(realm.key, account.roles, field["username"], account.token_lifetime_s)
                self._answer(
                    200, {"access_token": token, "token_type": "Bearer", "expires_in": account.token_lifetime_s}
                )

        self._server = LoopbackServer(Handler, "/realms/test")
        self.url = self._server.url
        _REALMS.append(self)

    def public_key(self) -> str:
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def __enter__(self) -> "FakeRealm":
        self._server.start()
        return self

    def __exit__(self, *exc):
        self._server.close()

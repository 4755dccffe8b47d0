"""Access control for the server: bearer tokens from a Keycloak realm, and roles that nest.

With ``MONAI_LABEL_AUTH_ENABLE=true`` every route needs a bearer token
signed by the realm at ``MONAI_LABEL_AUTH_REALM_URI`` (RS256, with ``exp``), issued by that realm (``iss``) to this
app's client (``azp``; see :func:`configure`); no token or a bad one -> 401.
Roles nest: admin > reviewer > annotator > user, so a route that needs ``monailabel-user`` also admits an
annotator or an admin; a role too low -> 403 naming the role needed. :func:`install` applies this to MONAI
Label's own routes too (whose checks want exactly the listed role, and whose token check does not work with
PyJWT 2, which wants the algorithm named), and raises a few of them (:data:`RAISED`).
Public (no token): ``/``, ``/docs``, ``/openapi.json``, ``/static``, ``/favicon.ico``, ``/auth/``, ``/auth/token``.

``POST /auth/token`` (:data:`login_router`, in place of MONAI Label's, which answers 500 to a wrong password)
swaps a user name and password for a realm token: 401 for wrong credentials, 502 when the realm refuses
for another reason (a client without direct access grants, say), 503 when it cannot be reached.
The realm's public key is fetched once and fetched again (at most once a minute) when a token's signature
does not match it, so a key rotated in Keycloak needs no restart.
"""

import logging
import threading
import time
from typing import Any, Dict, Iterator, NamedTuple, Optional, Sequence, Set, Tuple, Union, cast

import jwt
import requests
from fastapi import APIRouter, Depends, HTTPException, Security, routing, status
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from monailabel.config import settings
from monailabel.endpoints.user import auth as stock_auth
from monailabel.endpoints.user.auth import DEFAULT_USER, RBAC, User

logger = logging.getLogger(__name__)

ADMIN = settings.MONAI_LABEL_AUTH_ROLE_ADMIN
REVIEWER = settings.MONAI_LABEL_AUTH_ROLE_REVIEWER
ANNOTATOR = settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR
USER = settings.MONAI_LABEL_AUTH_ROLE_USER
#: Lowest to highest: each role may do what the ones before it may.
HIERARCHY = (USER, ANNOTATOR, REVIEWER, ADMIN)
#: MONAI Label routes whose stock check is too weak: (method, path) -> role now needed.
RAISED: Dict[Tuple[str, str], str] = {
    ("PUT", "/model/{model}"): ADMIN,  # replaces the weights every infer uses
    ("DELETE", "/model/{model}"): ADMIN,
    ("POST", "/proxy/dicom/stow/{path}"): ANNOTATOR,  # stores into the PACS (stock: any user)
    ("GET", "/proxy/dicom/stow/{path}"): ANNOTATOR,
}
ALGORITHMS = ["RS256"]
#: Shortest wait between two fetches of the realm's public key prompted by tokens it does not verify.
KEY_REFRESH_S = 60.0

_bearer = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def _claim(payload: dict, path: str):
    """The claim at ``path`` ("realm_access#roles" walks nested objects), or None."""
    value: Any = payload
    for key in path.split("#"):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _unreachable(what: str, error: Exception) -> HTTPException:
    """The 503 for a realm that could not be asked ``what`` (logged with the error's type only)."""
    logger.error(f"cannot {what}: {type(error).__name__}")
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="the identity provider cannot be reached")


def _realm_field(url: str, field: str, what: str):
    """``field`` of the JSON the realm answers at ``url``; 503 (see :func:`_unreachable`) when that fails."""
    try:
        answer = requests.get(url, timeout=settings.MONAI_LABEL_AUTH_TIMEOUT)
        answer.raise_for_status()
        return answer.json()[field]
    except (requests.RequestException, KeyError, ValueError, TypeError) as error:
        raise _unreachable(what, error) from None


class _RealmKey:
    """The realm's public key (PEM), fetched on first use and again on :meth:`refresh` at most every
    :data:`KEY_REFRESH_S` seconds."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key: Optional[str] = None
        self._fetched_at = float("-inf")

    def _fetch(self) -> str:
        key = _realm_field(settings.MONAI_LABEL_AUTH_REALM_URI, "public_key", "fetch the realm's public key")
        return f"-----BEGIN PUBLIC KEY-----\n{key}\n-----END PUBLIC KEY-----"

    def get(self) -> str:
        with self._lock:
            if self._key is None:
                self._fetched_at = time.monotonic()
                self._key = self._fetch()
            return self._key

    def refresh(self) -> bool:
        """Fetch the key again unless that was done less than :data:`KEY_REFRESH_S` ago; True if it changed."""
        with self._lock:
            if time.monotonic() - self._fetched_at < KEY_REFRESH_S:
                return False
            self._fetched_at = time.monotonic()  # also when the fetch fails: forged tokens must not hammer the realm
            old, self._key = self._key, self._fetch()
            return self._key != old


realm_key = _RealmKey()


#: What a token must name besides a valid signature (see :func:`configure`): its issuer, the client it was issued to
#: (``azp``), and, when set, an audience.
EXPECTED: Dict[str, Optional[str]] = {"issuer": None, "client": None, "audience": None}


def configure(issuer: Optional[str] = None, client: Optional[str] = None, audience: Optional[str] = None) -> None:
    """Set what tokens must name: ``issuer`` (``--conf auth_issuer``; default the realm URL
    ``MONAI_LABEL_AUTH_REALM_URI``), ``client`` (``--conf auth_client_id``; default ``MONAI_LABEL_AUTH_CLIENT_ID``,
    checked against ``azp``), ``audience`` (``--conf auth_audience``; checked against ``aud`` only when set).

    Raises:
        ValueError: a value that is given but empty or not a string, naming the parameter.
    """
    for name, value in (("auth_issuer", issuer), ("auth_client_id", client), ("auth_audience", audience)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"--conf {name} must be a non-empty string, got {value!r}")
    EXPECTED.update(
        issuer=issuer.strip().rstrip("/") if issuer else None,
        client=client.strip() if client else None,
        audience=audience.strip() if audience else None,
    )


def _decode(token: str, key: str) -> dict:
    issuer = EXPECTED["issuer"] or settings.MONAI_LABEL_AUTH_REALM_URI.strip().rstrip("/")
    audience = EXPECTED["audience"]
    payload = jwt.decode(
        token,
        key,
        algorithms=ALGORITHMS,
        issuer=issuer,
        audience=audience,
        options={"verify_aud": audience is not None, "require": ["exp", "iss", "azp"]},
    )
    client = EXPECTED["client"] or settings.MONAI_LABEL_AUTH_CLIENT_ID
    if payload.get("azp") != client:
        raise jwt.InvalidTokenError("the token was issued to another client")
    return payload


def user_from_token(token: str) -> User:
    """Check ``token`` against the realm's public key and read the user and their roles from it.

    Args:
        token: the encoded JWT.

    Returns:
        The user, with the realm roles of the token.

    Raises:
        HTTPException: 401 for a token that is not valid, 503 when the realm cannot be reached.
    """
    try:
        try:
            payload = _decode(token, realm_key.get())
        except jwt.InvalidSignatureError:
            if not realm_key.refresh():  # the realm may have rotated its key
                raise
            payload = _decode(token, realm_key.get())
    except jwt.InvalidTokenError as error:
        logger.warning(f"bearer token refused: {type(error).__name__}")  # never the token or its claims
        raise _unauthorized("Could not validate credentials") from None
    roles = _claim(payload, settings.MONAI_LABEL_AUTH_TOKEN_ROLES)
    return User(
        username=str(payload.get(settings.MONAI_LABEL_AUTH_TOKEN_USERNAME) or ""),
        email=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_EMAIL),
        name=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_NAME),
        roles=[r for r in roles if isinstance(r, str)] if isinstance(roles, list) else [],
    )


login_router = APIRouter()


def _token_endpoint() -> str:
    """The realm's token URL, from its OpenID configuration (503 when that cannot be read)."""
    url = f"{settings.MONAI_LABEL_AUTH_REALM_URI.rstrip('/')}/.well-known/openid-configuration"
    endpoint = _realm_field(url, "token_endpoint", "read the realm's OpenID configuration")
    if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, detail="the identity provider names no token endpoint")
    return endpoint


@login_router.post("/auth/token", summary="Swap a user name and password for a token (the realm's password grant)")
def access_token(form: OAuth2PasswordRequestForm = Depends()) -> dict:
    data = {
        "client_id": settings.MONAI_LABEL_AUTH_CLIENT_ID,
        "username": form.username,
        "password": form.password,
        "grant_type": "password",
    }
    try:
        answer = requests.post(_token_endpoint(), data=data, timeout=settings.MONAI_LABEL_AUTH_TIMEOUT)
    except requests.RequestException as error:
        raise _unreachable("reach the realm's token endpoint", error) from None
    try:
        body = answer.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    if answer.ok and isinstance(body.get("access_token"), str):
        return body
    refusal = str(body.get("error") or f"HTTP {answer.status_code}")[:100]
    logger.warning(f"login refused by the identity provider: {refusal}")  # never the user name
    if refusal == "invalid_grant":  # Keycloak's answer to a wrong user name or password (or a disabled account)
        raise _unauthorized("wrong user name or password")
    raise HTTPException(status.HTTP_502_BAD_GATEWAY, detail=f"the identity provider refused the login: {refusal}")


async def current_user(token: Optional[str] = Depends(_bearer)) -> User:
    """FastAPI dependency: the caller (MONAI Label's all-roles default user when auth is off)."""
    if not settings.MONAI_LABEL_AUTH_ENABLE:
        return DEFAULT_USER
    if not token:
        raise _unauthorized("Not authenticated")
    return user_from_token(token)


def rank(role: str) -> int:
    """Position of ``role`` in :data:`HIERARCHY`; -1 for a role outside it."""
    return HIERARCHY.index(role) if role in HIERARCHY else -1


class RoleRequired:
    """FastAPI dependency admitting users with ``role`` or a role above it.

    Args:
        role: the lowest role admitted, one of :data:`HIERARCHY`.
    """

    def __init__(self, role: str):
        if role not in HIERARCHY:
            raise ValueError(f"unknown role {role!r}; roles: {HIERARCHY}")
        self.role = role

    async def __call__(self, user: User = Security(current_user)) -> User:
        if not settings.MONAI_LABEL_AUTH_ENABLE or max(map(rank, user.roles), default=-1) >= rank(self.role):
            return user
        detail = f'Role "{self.role}" (or a higher one) is required to perform this action'
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=detail)


def stock_role(roles: Union[str, Sequence[str]]) -> str:
    """The lowest role a MONAI Label ``RBAC(roles)`` check admits ("*" -> any role; none known -> admin)."""
    roles = HIERARCHY if roles == "*" else [roles] if isinstance(roles, str) else list(roles)
    known = [r for r in roles if r in HIERARCHY]
    return min(known, key=rank) if known else ADMIN


class Endpoint(NamedTuple):
    """One route as the server sees it: methods, full path (prefixes included) and dependencies."""

    methods: Set[str]
    path_format: str
    dependant: object


def endpoints(server) -> Iterator[Endpoint]:
    """Every API route of ``server`` in matching order, included routers flattened."""
    contexts = getattr(routing, "iter_route_contexts", None)  # FastAPI that keeps included routers nested
    for route in contexts(server.router.routes) if contexts else server.router.routes:
        original = getattr(route, "original_route", route)
        if isinstance(original, APIRoute):
            dependant = getattr(route, "dependant", None) or original.dependant
            yield Endpoint(set(route.methods), route.path_format, dependant)


def _nested(dependant) -> Iterator:
    """Every dependency of ``dependant``, and theirs, depth first."""
    for sub in dependant.dependencies:
        yield sub
        yield from _nested(sub)


def _is_role_required(call) -> bool:
    """A :class:`RoleRequired`, also one from an earlier import of this module (MONAI Label unloads and re-imports
    the app's ``lib`` package each time it loads the app)."""
    kind = type(call)
    return isinstance(call, RoleRequired) or (kind.__module__, kind.__qualname__) == (
        RoleRequired.__module__,
        "RoleRequired",
    )


def route_role(route: Endpoint) -> Optional[str]:
    """The role a route needs once :func:`install` has run; None for a route that checks no role."""
    found = []
    for sub in _nested(route.dependant):
        if _is_role_required(sub.call):
            found.append(sub.call.role)
        elif isinstance(sub.call, RBAC):
            found.append(stock_role(sub.call.roles))
    found += [RAISED[(m, route.path_format)] for m in route.methods if (m, route.path_format) in RAISED]
    return max(found, key=rank) if found else None


def install(server) -> None:
    """Apply nested roles, :data:`RAISED` and a working token check to every route of ``server``.

    MONAI Label's ``RBAC`` checks are swapped for :class:`RoleRequired` through FastAPI's dependency
    overrides (an ``RBAC`` instance shared by several routes gets the strictest role among them).
    Nothing changes while auth is off.
    """
    if not settings.MONAI_LABEL_AUTH_ENABLE:
        return
    overrides = server.dependency_overrides
    overrides[stock_auth.get_current_user] = current_user
    for route in endpoints(server):
        role = cast(str, route_role(route))  # not None where the route has an RBAC check
        for sub in _nested(route.dependant):
            if isinstance(sub.call, RBAC):
                previous = overrides.get(sub.call)
                if previous is None or rank(previous.role) < rank(role):
                    overrides[sub.call] = RoleRequired(role)

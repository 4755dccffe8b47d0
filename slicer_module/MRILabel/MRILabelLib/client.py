"""A small HTTP client for the mri-label MONAI Label server, standard library only (``urllib``).

Every call has a timeout; connection refused/reset and HTTP 502/503/504 are retried a bounded number of
times with exponential backoff. Failures are raised as the errors of :mod:`MRILabelLib.errors`.

On a server with MONAI Label auth on, :meth:`ServerClient.login` swaps a user name and password for a token
(``POST /auth/token``), sent with every later call; when the token expires (Keycloak's tokens last 5 minutes by
default) the next call that gets a 401 logs in again once and is sent again.

Servers on this machine or at a private (LAN) address are reached directly, never through the system proxy
(:func:`direct_connection`; ``MRILABEL_NO_PROXY=1`` makes every server direct).
"""

import http.client
import ipaddress
import json
import os
import re
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

from . import multipart
from .errors import ServerHTTPError, ServerTimeoutError, ServerUnreachableError, UnexpectedAnswerError

#: Set to 1 (or true/yes) to reach every server directly, never through the system proxy.
NO_PROXY_ENV = "MRILABEL_NO_PROXY"
RETRY_STATUSES = (502, 503, 504)
#: Connection failures worth another try (``http.client.RemoteDisconnected`` is a ConnectionResetError).
TRANSIENT_ERRORS = (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


class Response(NamedTuple):
    """An HTTP answer: status, lower-cased headers and body."""

    status: int
    headers: Dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError:
            raise UnexpectedAnswerError(f"expected JSON, got {self.body[:60]!r}") from None


def direct_connection(base_url: str, environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether calls to ``base_url`` bypass the system proxy: always for this machine (``localhost``, loopback) and
    for private, link-local and other non-public addresses (a LAN server a hospital proxy cannot reach), and for any
    address when the environment variable ``MRILABEL_NO_PROXY`` is 1/true/yes. Host names are not resolved.

    Args:
        base_url: the server's address.
        environ: the environment to read (``os.environ`` when None).
    """
    environ = os.environ if environ is None else environ
    if str(environ.get(NO_PROXY_ENV, "")).strip().lower() in ("1", "true", "yes"):
        return True
    host = (urllib.parse.urlparse(str(base_url)).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def detail_of(body: bytes) -> str:
    """The ``detail`` of a FastAPI error body as one line (validation errors joined), else the body text."""
    try:
        detail = json.loads(body.decode("utf-8")).get("detail", "")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return " ".join(body.decode("utf-8", "replace").split())[:300]
    if isinstance(detail, list):
        messages = [
            f"{'.'.join(str(x) for x in d.get('loc', []))}: {d.get('msg')}" for d in detail if isinstance(d, dict)
        ]
        return "; ".join(messages)
    return " ".join(str(detail).split())


class ServerClient:
    """HTTP calls to one MONAI Label server.

    Args:
        base_url: server address, e.g. ``http://127.0.0.1:8000``.
        timeout_s: default time limit of a call, in seconds.
        retries: how many times a transient failure is retried (0 = no retry).
        backoff_s: wait before the first retry; doubled before each further one.
        sleep: the function used to wait (replaceable in tests).
    """

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ):
        parsed = urllib.parse.urlparse(str(base_url or "").strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http(s) address like http://127.0.0.1:8000, got {base_url!r}")
        if not timeout_s or timeout_s <= 0:
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, got {retries!r}")
        if backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {backoff_s!r}")
        self.base_url = str(base_url).strip().rstrip("/")
        self.timeout_s, self.retries, self.backoff_s, self._sleep = float(timeout_s), retries, float(backoff_s), sleep
        self._token: Optional[str] = None
        self._credentials: Optional[Tuple[str, str]] = None
        # loopback and LAN servers are reached directly: a system proxy would refuse them or see the patient data
        direct = direct_connection(self.base_url)
        self._opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if direct else []))

    # --- authentication --------------------------------------------------------------------------------

    def auth_enabled(self) -> bool:
        """Whether the server wants a login (``GET /auth/``; MONAI Label has no such route with auth off)."""
        try:
            answer = self.request("GET", "/auth/")
        except ServerHTTPError as error:
            if error.status == 404:
                return False
            raise
        return bool(answer.json().get("enabled"))

    def login(self, username: str, password: str) -> None:
        """Get a token for ``username`` (``POST /auth/token``) and send it with every later call.

        Raises:
            ValueError: an empty user name or password.
            ServerHTTPError: 401 for a wrong user name or password.
        """
        if not username or not password:
            raise ValueError("this server asks for a user name and a password: enter both, then connect again")
        answer = self.request(
            "POST",
            "/auth/token",
            form={"username": username, "password": password, "grant_type": "password"},
            _auth=False,
        ).json()
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise UnexpectedAnswerError("the login answer holds no access token")
        self._token, self._credentials = token, (username, password)

    @property
    def logged_in(self) -> bool:
        return self._token is not None

    def request(
        self,
        method: str,
        path: str,
        query: Optional[Dict[str, Any]] = None,
        json_body: Any = None,
        form: Optional[Dict[str, str]] = None,
        files: Optional[Dict[str, Tuple[str, bytes]]] = None,
        timeout_s: Optional[float] = None,
        _auth: bool = True,
    ) -> Response:
        """Send one request (retrying transient failures) and return the answer.

        With a token from :meth:`login`, a 401 (the token expired) logs in again once and resends the request.

        Raises:
            ServerUnreachableError: no connection after all retries.
            ServerTimeoutError: no answer within the time limit.
            ServerHTTPError: an HTTP status >= 400 (after retries for 502/503/504).
        """
        try:
            return self._send(method, path, query, json_body, form, files, timeout_s, _auth)
        except ServerHTTPError as error:
            if not (_auth and error.status == 401 and self._credentials):
                raise
        self.login(*self._credentials)
        return self._send(method, path, query, json_body, form, files, timeout_s, _auth)

    def _send(self, method, path, query, json_body, form, files, timeout_s, auth: bool) -> Response:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        headers, data = {"Accept": "application/json, */*"}, None
        if files or form:
            data, headers["Content-Type"] = multipart.encode(form or {}, files or {})
        elif json_body is not None:
            data, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
        if auth and self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        timeout = float(timeout_s or self.timeout_s)
        for attempt in range(self.retries + 1):
            last_try = attempt == self.retries
            try:
                request = urllib.request.Request(url, data=data, headers=headers, method=method)
                with self._opener.open(request, timeout=timeout) as answer:
                    return Response(answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read())
            except urllib.error.HTTPError as error:
                body = error.read() or b""
                if error.code in RETRY_STATUSES and not last_try:
                    self._wait(attempt)
                    continue
                raise ServerHTTPError(error.code, detail_of(body) or error.reason, method, path) from None
            except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
                reason = getattr(error, "reason", error)
                if isinstance(reason, (socket.timeout, TimeoutError)) or isinstance(
                    error, (socket.timeout, TimeoutError)
                ):
                    raise ServerTimeoutError(self.base_url, timeout) from None
                transient = isinstance(reason, TRANSIENT_ERRORS) or isinstance(error, TRANSIENT_ERRORS)
                if transient and not last_try:
                    self._wait(attempt)
                    continue
                raise ServerUnreachableError(self.base_url, str(reason)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, attempt: int) -> None:
        self._sleep(self.backoff_s * (2**attempt))

    # --- MONAI Label endpoints -------------------------------------------------------------------------

    def info(self) -> Dict:
        """``GET /info/``: models, trainers, strategies, labels."""
        return self.request("GET", "/info/").json()

    def image_exists(self, image_id: str) -> bool:
        """``HEAD /datastore/image``: whether the datastore holds ``image_id``."""
        try:
            self.request("HEAD", "/datastore/image", {"image": image_id})
            return True
        except ServerHTTPError as error:
            if error.status == 404:
                return False
            raise

    def upload_image(self, image_id: str, path: str, timeout_s: Optional[float] = None) -> Dict:
        """``PUT /datastore/image``: add the file at ``path`` to the datastore as ``image_id``."""
        with open(path, "rb") as handle:
            content = handle.read()
        files = {"file": (os.path.basename(path), content)}
        return self.request(
            "PUT", "/datastore/image", {"image": image_id}, form={"params": "{}"}, files=files, timeout_s=timeout_s
        ).json()

    def download_image(self, image_id: str, folder: str) -> str:
        """``GET /datastore/image``: save the image into ``folder``; return the file's path."""
        answer = self.request("GET", "/datastore/image", {"image": image_id}, timeout_s=max(self.timeout_s, 120))
        name = _attachment_name(answer.headers) or f"{image_id}.nii.gz"
        path = os.path.join(folder, os.path.basename(name))
        with open(path, "wb") as handle:
            handle.write(answer.body)
        return path

    def infer(
        self,
        model: str,
        image_id: str,
        params: Optional[Dict] = None,
        output: str = "all",
        folder: Optional[str] = None,
        timeout_s: Optional[float] = None,
    ) -> Tuple[Dict, Optional[str]]:
        """``POST /infer/{model}``: the result JSON and the path of the result file (None when there is none).

        Args:
            model: task name.
            image_id: datastore image id.
            params: infer parameters (sent as the ``params`` form field).
            output: ``all`` (JSON plus file, when the server has one) or ``json``.
            folder: where a result file is written (a new temporary folder when None).
            timeout_s: time limit of this call.
        """
        if output not in ("all", "json"):
            raise ValueError(f"output must be 'all' or 'json', got {output!r}")
        answer = self.request(
            "POST",
            f"/infer/{urllib.parse.quote(model)}",
            {"image": image_id, "output": output},
            form={"params": json.dumps(params or {})},
            timeout_s=timeout_s or max(self.timeout_s, 300),
        )
        if not answer.headers.get("content-type", "").startswith("multipart/"):
            return answer.json(), None
        parts = multipart.decode(answer.body, answer.headers["content-type"])
        result = json.loads(parts["params"].data.decode("utf-8")) if "params" in parts else {}
        image = parts.get("image")
        if image is None or not image.data:
            return result, None
        folder = folder or tempfile.mkdtemp(prefix="mrilabel_")
        path = os.path.join(folder, f"{model}_{image_id}_{os.path.basename(image.filename or 'result.nii.gz')}")
        with open(path, "wb") as handle:
            handle.write(image.data)
        return result, path

    def report(
        self,
        model: str,
        image_id: str,
        params: Optional[Dict] = None,
        folder: Optional[str] = None,
        timeout_s: Optional[float] = None,
    ) -> str:
        """``POST /infer/{model}?output=report``: run the task and save the one-page report (PDF) it answers into
        ``folder`` (a new temporary folder when None) under the server's file name (``<image>-<task>-report.pdf``);
        return the file's path.

        Args:
            params: infer params (``subject``, ``study_date``, ``age``, ``sex``); ``report_format`` is always
                ``pdf`` (the ZIP with the page's PNG and JSON is not asked for).

        Raises:
            ServerHTTPError: 422 for a task that makes no report or a bad param (the server's sentence).
            UnexpectedAnswerError: the answer is not a PDF (an older server answers its usual result).
        """
        sent = dict(params or {}, report_format="pdf")
        answer = self.request(
            "POST",
            f"/infer/{urllib.parse.quote(model)}",
            {"image": image_id, "output": "report"},
            form={"params": json.dumps(sent)},
            timeout_s=timeout_s or max(self.timeout_s, 300),
        )
        kind = answer.headers.get("content-type", "")
        if not kind.startswith("application/pdf") or not answer.body.startswith(b"%PDF-"):
            raise UnexpectedAnswerError(
                f"the report of {model} is not a PDF (content type {kind or 'none'!r}, begins {answer.body[:16]!r})"
            )
        name = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(_attachment_name(answer.headers) or ""))
        if not name.lower().endswith(".pdf") or name.startswith("."):
            name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{image_id}-{model}-report") + ".pdf"
        folder = folder or tempfile.mkdtemp(prefix="mrilabel_")
        path = os.path.join(folder, name)
        with open(path, "wb") as handle:
            handle.write(answer.body)
        return path

    def uncertainty_map(
        self, model: str, image_id: str, folder: Optional[str] = None, timeout_s: Optional[float] = None
    ) -> Tuple[Dict, Optional[str]]:
        """``POST /infer/{model}`` with params ``{"uncertainty": true}``, ``output=all``: one inference answers both
        the voxel uncertainty map (a float32 NIfTI in the image's grid, written under ``folder``) and the JSON whose
        ``uncertainty`` summarises it. A server or task without uncertainty maps answers its usual result (no
        ``uncertainty`` key) or a 422; the caller checks."""
        return self.infer(model, image_id, {"uncertainty": True}, output="all", folder=folder, timeout_s=timeout_s)

    def save_label(self, image_id: str, path: str, tag: str, label_info: list) -> Dict:
        """``PUT /datastore/label``: store the label file at ``path`` for ``image_id`` under ``tag``."""
        with open(path, "rb") as handle:
            content = handle.read()
        return self.request(
            "PUT",
            "/datastore/label",
            {"image": image_id, "tag": tag},
            form={"params": json.dumps({"label_info": label_info})},
            files={"label": (os.path.basename(path), content)},
            timeout_s=max(self.timeout_s, 120),
        ).json()

    def put_class_label(self, task: str, image_id: str, label: str) -> Dict:
        """``PUT /classlabel/{task}``: record the correct class of an image."""
        path = f"/classlabel/{urllib.parse.quote(task)}"
        return self.request("PUT", path, {"image": image_id}, json_body={"label": label}).json()

    def get_class_label(self, task: str, image_id: str) -> Dict:
        """``GET /classlabel/{task}``: the recorded class and the latest prediction."""
        return self.request("GET", f"/classlabel/{urllib.parse.quote(task)}", {"image": image_id}).json()

    def start_training(self, model: str, params: Optional[Dict] = None) -> Dict:
        """``POST /train/{model}``: start a training; returns the run's record (``id``, ``status``)."""
        return self.request("POST", f"/train/{urllib.parse.quote(model)}", json_body=params or {}).json()

    def training_runs(self) -> list:
        """``GET /train/?all=true``: every training run of this server process (empty when none)."""
        try:
            runs = self.request("GET", "/train/", {"all": "true"}).json()
        except ServerHTTPError as error:
            if error.status == 404:
                return []
            raise
        return runs if isinstance(runs, list) else [runs]

    def logs(self, lines: int = 100) -> str:
        """``GET /logs/?lines=N&text=true``: the last lines of the server log as text."""
        return self.request("GET", "/logs/", {"lines": int(lines), "text": "true"}).body.decode("utf-8", "replace")

    def next_sample(self, strategy: str, params: Optional[Dict] = None) -> Dict:
        """``POST /activelearning/{strategy}``: the next image to label (``{}`` when none is left)."""
        return self.request("POST", f"/activelearning/{urllib.parse.quote(strategy)}", json_body=params or {}).json()

    def datastore(self) -> Dict:
        """``GET /datastore/?output=all``: every image with its info and labels."""
        return self.request("GET", "/datastore/", {"output": "all"}).json()

    def download_label(self, label_id: str, folder: str, tag: str = "final") -> str:
        """``GET /datastore/label?label=ID&tag=TAG`` (MONAI Label's route; in a local datastore a label's id is its
        image's id): save the label into ``folder`` as ``<tag>_label_<file name>`` (the image downloaded beside it
        has the same file name); return the file's path."""
        answer = self.request(
            "GET", "/datastore/label", {"label": label_id, "tag": tag}, timeout_s=max(self.timeout_s, 120)
        )
        name = os.path.basename(_attachment_name(answer.headers) or f"{label_id}.nii.gz")
        path = os.path.join(folder, f"{tag}_label_{name}")
        with open(path, "wb") as handle:
            handle.write(answer.body)
        return path

    # --- mri-label routes (apps/mri_app/lib/mri_routes.py) ---------------------------------------------------

    def history(self, task: str) -> Dict:
        """``GET /mri/history/{task}`` (user): ``{"task", "served", "entries"}``, entries newest first."""
        return self.request("GET", f"/mri/history/{urllib.parse.quote(task)}").json()

    def rollback(self, task: str) -> Dict:
        """``POST /mri/rollback/{task}`` (admin): serve the newest archived checkpoint again;
        ``{"task", "served", "entry"}``."""
        return self.request("POST", f"/mri/rollback/{urllib.parse.quote(task)}").json()

    def put_review(self, image_id: str, status: str, comment: str = "") -> Dict:
        """``PUT /mri/review/{image}`` (reviewer): ``{"image", "review"}``."""
        body = {"status": status, "comment": comment}
        return self.request("PUT", f"/mri/review/{urllib.parse.quote(image_id)}", json_body=body).json()

    def reviews(self, status: Optional[str] = None) -> Dict:
        """``GET /mri/review?status=...`` (reviewer): ``{"status", "count", "images"}`` (every state when None)."""
        return self.request("GET", "/mri/review", {"status": status} if status else None).json()


def _attachment_name(headers: Dict[str, str]) -> Optional[str]:
    disposition = headers.get("content-disposition", "")
    for item in disposition.split(";"):
        key, _, value = item.strip().partition("=")
        if key.lower() == "filename":
            return value.strip().strip('"')
    return None

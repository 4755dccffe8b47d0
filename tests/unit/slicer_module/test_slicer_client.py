"""The module's HTTP client: retries, backoff, timeouts and error bodies, plus multipart round trips.

Transport failures the real server cannot be made to produce on demand (502/503/504, a reset connection,
a stalled answer, a 413) come from a tiny scripted HTTP listener on a loopback port; everything the
mri-label server itself answers is tested against the real server in test_slicer_logic.py.
"""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from MRILabelLib import multipart, plain_sentence
from MRILabelLib.client import ServerClient, detail_of
from MRILabelLib.errors import ServerHTTPError, ServerTimeoutError, ServerUnreachableError
from tests.helpers.live_server import free_port
from tests.helpers.loopback import LoopbackServer


class ScriptedListener:
    """Answers successive requests from a script of ``(status, body)``, ``"reset"`` or ``("stall", s)``."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                listener.requests.append(self.path)
                step = listener.script.pop(0) if len(listener.script) > 1 else listener.script[0]
                if step == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.close()
                    return
                if step[0] == "stall":
                    threading.Event().wait(step[1])
                    step = (200, {})
                body = json.dumps(step[1]).encode()
                self.send_response(step[0])
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = LoopbackServer(Handler).start()
        self.url = self.server.url

    def close(self):
        self.server.close()


@pytest.fixture
def listener(request):
    scripted = ScriptedListener(request.param)
    yield scripted
    scripted.close()


def _client(url, retries=3):
    waits = []
    return ServerClient(url, timeout_s=2, retries=retries, backoff_s=0.01, sleep=waits.append), waits


@pytest.mark.parametrize("listener", [[(503, {"detail": "busy"}), (502, {}), (200, {"models": {}})]], indirect=True)
def test_transient_statuses_are_retried_with_doubling_backoff(listener):
    client, waits = _client(listener.url)
    assert client.info() == {"models": {}}
    assert len(listener.requests) == 3 and waits == [0.01, 0.02]


@pytest.mark.parametrize("listener", [[(504, {"detail": "gateway timeout"})]], indirect=True)
def test_retries_are_bounded(listener):
    client, waits = _client(listener.url, retries=2)
    with pytest.raises(ServerHTTPError) as caught:
        client.info()
    assert caught.value.status == 504 and len(listener.requests) == 3 and waits == [0.01, 0.02]
    assert plain_sentence(caught.value) == "The server is temporarily unavailable (HTTP 504); try again in a moment."


@pytest.mark.parametrize("listener", [["reset", "reset", (200, {"models": {}})]], indirect=True)
def test_reset_connections_are_retried(listener):
    client, waits = _client(listener.url)
    assert client.info() == {"models": {}}
    assert len(listener.requests) == 3 and len(waits) == 2


@pytest.mark.parametrize("listener", [[(404, {"detail": "x"})]], indirect=True)
def test_client_errors_are_not_retried(listener):
    client, waits = _client(listener.url)
    with pytest.raises(ServerHTTPError):
        client.info()
    assert len(listener.requests) == 1 and waits == []


@pytest.mark.parametrize("listener", [[(413, {"detail": "Request Entity Too Large"})]], indirect=True)
def test_413_is_the_too_large_sentence(listener):
    client, _ = _client(listener.url)
    with pytest.raises(ServerHTTPError) as caught:
        client.info()
    assert plain_sentence(caught.value) == "The image is too large for the server; crop or resample it before sending."


@pytest.mark.parametrize("listener", [[("stall", 1.0)]], indirect=True)
def test_a_stalled_answer_times_out_without_retry(listener):
    client = ServerClient(listener.url, timeout_s=0.3, retries=3, backoff_s=0.01)
    with pytest.raises(ServerTimeoutError) as caught:
        client.info()
    assert len(listener.requests) == 1
    assert plain_sentence(caught.value) == (
        f"The server at {listener.url} did not answer within 0.3 seconds; it may be busy, so try again in a moment."
    )


def test_refused_connections_are_retried_then_reported():
    url = f"http://127.0.0.1:{free_port()}"
    client, waits = _client(url, retries=2)
    with pytest.raises(ServerUnreachableError) as caught:
        client.info()
    assert waits == [0.01, 0.02] and caught.value.url == url


@pytest.mark.parametrize(
    "body, detail",
    [
        (b'{"detail": "model \'x\' is not served here"}', "model 'x' is not served here"),
        (b'{"detail": [{"loc": ["body", "label"], "msg": "Field required"}]}', "body.label: Field required"),
        (b"Internal Server Error", "Internal Server Error"),
        (b'{"detail": "two\\nlines"}', "two lines"),
    ],
)
def test_detail_of_error_bodies(body, detail):
    assert detail_of(body) == detail


@pytest.mark.parametrize(
    "kwargs, parameter",
    [
        ({"base_url": "127.0.0.1:8000"}, "base_url"),
        ({"base_url": "ftp://host"}, "base_url"),
        ({"base_url": "http://h", "timeout_s": 0}, "timeout_s"),
        ({"base_url": "http://h", "retries": -1}, "retries"),
        ({"base_url": "http://h", "retries": 1.5}, "retries"),
        ({"base_url": "http://h", "backoff_s": -0.1}, "backoff_s"),
    ],
)
def test_client_arguments_are_validated(kwargs, parameter):
    with pytest.raises(ValueError, match=parameter):
        ServerClient(**kwargs)


def test_base_url_is_normalised():
    assert ServerClient(" http://127.0.0.1:8000/ ").base_url == "http://127.0.0.1:8000"


def test_multipart_round_trip_is_byte_exact():
    binary = bytes(range(256)) * 4 + b"\r\n--not-a-boundary\r\n\r\n"
    body, content_type = multipart.encode({"params": '{"a": 1}'}, {"file": ("x.nii.gz", binary)})
    parts = multipart.decode(body, content_type)
    assert parts["params"].data == b'{"a": 1}' and parts["params"].filename is None
    assert parts["file"].data == binary and parts["file"].filename == "x.nii.gz"


def test_multipart_without_boundary_is_refused():
    with pytest.raises(ValueError, match="content_type"):
        multipart.decode(b"", "multipart/form-data")


@pytest.mark.parametrize("listener", [[(200, {"models": {}})]], indirect=True)
def test_loopback_calls_do_not_go_through_the_system_proxy(listener, monkeypatch):
    """Issue 18 row 12: a system proxy (here one that does not exist) is not used for a server on this machine."""
    import urllib.request

    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    for name in ("no_proxy", "NO_PROXY", "MRILABEL_NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)  # urlopen's shared opener reads the proxy settings anew
    client, _ = _client(listener.url, retries=0)
    assert client.info() == {"models": {}}

"""The DICOMweb proxy (:mod:`lib.pacs_proxy`): only DICOMweb resource paths, dot segments refused, POST is STOW-RS
for annotators, only Accept/Content-Type go upstream, time limits; in process against a recording fake PACS."""

import time
from http.server import BaseHTTPRequestHandler

import pytest
from fastapi import HTTPException
from monailabel.config import settings

from lib import pacs_proxy
from lib.access import ANNOTATOR, USER
from tests.helpers.loopback import LoopbackServer


@pytest.mark.parametrize(
    "path,op,segments",
    [
        ("studies", "", ["studies"]),
        ("qido/studies", "qido", ["studies"]),
        ("wado/studies/1.2.3/series/4.5/metadata", "wado", ["studies", "1.2.3", "series", "4.5", "metadata"]),
        (
            "studies/1.2/series/3/instances/4.5/frames/1,2/rendered",
            "",
            ["studies", "1.2", "series", "3", "instances", "4.5", "frames", "1,2", "rendered"],
        ),
        ("stow/studies/1.2", "stow", ["studies", "1.2"]),
    ],
)
def test_dicomweb_paths_pass(path, op, segments):
    assert pacs_proxy.checked_path(path) == (op, segments)


@pytest.mark.parametrize(
    "path",
    [
        "../system",
        "..%2Fsystem",
        "%2E%2E/tools",
        "studies/../../system",
        "./studies",
        "studies//1.2",
        "system",
        "tools/execute-script",
        "studies/abc",
        "wado/patients",
        "studies/1.2/metadata/x",
        "studies/1.2/frames/a",
        "%252E%252E/system",
        "studies\\..\\x",
    ],
)
def test_other_paths_are_422(path):
    with pytest.raises(HTTPException) as refused:
        pacs_proxy.checked_path(path)
    assert refused.value.status_code == 422


class FakePACS:
    """Records (method, path, headers) and answers 200 JSON; sleeps ``delay`` s first."""

    def __init__(self):
        self.seen, self.delay = [], 0.0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                time.sleep(fake.delay)
                length = int(self.headers.get("Content-Length", 0) or 0)
                fake.seen.append(
                    (self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Set-Cookie", "pacs-session=secret")
                self.end_headers()
                self.wfile.write(b"[]")

            do_GET = do_POST = _answer

        self.server = LoopbackServer(Handler, "/dicom-web").start()
        self.url = self.server.url


@pytest.fixture
def proxied(api_server, monkeypatch):
    client, _, _ = api_server
    pacs = FakePACS()
    monkeypatch.setattr(settings, "MONAI_LABEL_STUDIES", pacs.url)
    yield client, pacs
    pacs.server.close()


def test_search_and_retrieve_are_forwarded_without_the_callers_credentials(proxied):
    client, pacs = proxied
    answer = client.get(
        "/proxy/dicom/qido/studies?PatientID=x",
        headers={"Authorization": "Bearer abc", "Cookie": "a=b", "Accept": "application/dicom+json"},
    )
    assert answer.status_code == 200 and answer.json() == [] and "set-cookie" not in answer.headers
    method, path, headers, _ = pacs.seen[-1]
    assert (method, path) == ("GET", "/dicom-web/studies?PatientID=x")
    assert "authorization" not in headers and "cookie" not in headers and headers["accept"] == "application/dicom+json"
    assert client.get("/proxy/dicom/wado/studies/1.2/series/3.4/metadata").status_code == 200
    assert pacs.seen[-1][1] == "/dicom-web/studies/1.2/series/3.4/metadata"


@pytest.mark.parametrize(
    "method,path,status",
    [
        ("get", "/proxy/dicom/%2E%2E/system", 422),
        ("get", "/proxy/dicom/..%2Fsystem", 422),
        ("get", "/proxy/dicom/wado/%2E%2E/%2E%2E/tools", 422),
        ("get", "/proxy/dicom/tools/execute-script", 422),
        ("post", "/proxy/dicom/wado/studies", 405),
        ("post", "/proxy/dicom/qido/studies", 405),
        ("post", "/proxy/dicom/studies/1.2/series", 422),
        ("get", "/proxy/dicom/stow/studies", 405),
    ],
)
def test_other_paths_and_methods_never_reach_the_pacs(proxied, method, path, status):
    client, pacs = proxied
    answer = getattr(client, method)(path)
    assert answer.status_code == status, answer.text
    assert pacs.seen == []


def test_stow_is_forwarded(proxied):
    client, pacs = proxied
    answer = client.post(
        "/proxy/dicom/stow/studies",
        content=b"--x--",
        headers={"Content-Type": "multipart/related; type=application/dicom"},
    )
    assert (
        answer.status_code == 200
        and pacs.seen[-1][:2] == ("POST", "/dicom-web/studies")
        and pacs.seen[-1][3] == b"--x--"
    )


def test_a_pacs_that_does_not_answer_in_time_is_504(proxied, monkeypatch):
    client, pacs = proxied
    from monailabel.app import app

    # the module that serves the route (MONAI Label re-imports the app's lib package; the routes stay from the first)
    from lib.access import endpoints

    route = next(r for r in endpoints(app) if r.path_format == "/proxy/dicom/{path}" and "GET" in r.methods)
    monkeypatch.setitem(route.dependant.call.__globals__, "PACS_TIMEOUT_S", (1.0, 0.3))
    pacs.delay = 1.5
    assert client.get("/proxy/dicom/studies").status_code == 504


def test_roles_of_the_proxy_routes():
    from monailabel.app import app

    from lib.access import endpoints, route_role
    from lib.routes import install

    install(app)
    roles = {}
    for route in endpoints(app):
        for method in route.methods:
            roles.setdefault((method, route.path_format), route_role(route))
    assert roles[("GET", "/proxy/dicom/{path}")] == USER and roles[("POST", "/proxy/dicom/{path}")] == ANNOTATOR

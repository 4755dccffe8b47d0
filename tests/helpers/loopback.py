"""A test's own HTTP listener on a free loopback port, served from a daemon thread (a stand-in server, a PACS, an
identity provider)."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Type


class LoopbackServer:
    """``handler`` served on ``127.0.0.1`` at a free port; ``url`` is its root plus ``path``."""

    def __init__(self, handler: Type[BaseHTTPRequestHandler], path: str = ""):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def start(self) -> "LoopbackServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

"""The HTTP edge of the simulator: stdlib `ThreadingHTTPServer`, HTTP/1.1 keep-alive.

Any path answers (`/getCdrs.php` is the one to use); GET only. Faults that live on the
socket happen for real: `drop` closes the connection without a byte, `truncate` sends a
`Content-Length` larger than the body it sends, then closes. Request lines are never
logged: they hold the password.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .app import SimResponse, Simulator

logger = logging.getLogger(__name__)

IDLE_TIMEOUT = 120.0
"""Seconds a kept-alive connection may sit idle before the server closes it."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], sim: Simulator) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.sim = sim
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """End kept-alive connections, so that no thread serves after `stop()`."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                logger.debug("simulator connection already closed")

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("simulator: error while serving a request")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Apache"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: the request line carries the password."""

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except ConnectionError:  # the client went away mid-answer: nothing to tell it
            self.close_connection = True

    def do_GET(self) -> None:
        query = urlsplit(self.path).query
        params = dict(parse_qsl(query, keep_blank_values=True))  # the last value wins, as in PHP
        try:
            answer = self.server.sim.handle(params)
        except Exception:
            logger.exception("simulator: the handler failed")
            answer = SimResponse(500, {"Content-Type": "text/plain"}, b"simulator bug\n")
        if answer.delay > 0 and self.server.stopping.wait(answer.delay):
            self.close_connection = True
            return
        if answer.action == "drop":
            self.close_connection = True
            return
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if answer.action == "truncate":
            self.wfile.write(answer.body[: len(answer.body) // 2])
            self.close_connection = True
        else:
            self.wfile.write(answer.body)

    def _not_allowed(self) -> None:
        body = b"Method Not Allowed\n"
        self.close_connection = True  # a request body may follow, unread
        self.send_response(405)
        self.send_header("Allow", "GET")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed


class SimulatorServer:
    """Serves a `Simulator` on a background thread; a context manager.

    Binds at construction (`port=0`: a free port), serves from `start()` (or `with`),
    `stop()` ends the listener and every open connection."""

    def __init__(
        self,
        sim: Simulator,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/getCdrs.php",
    ) -> None:
        self.sim = sim
        self._httpd = _Server((host, port), sim)
        self._thread: threading.Thread | None = None
        bound = self._httpd.server_address
        self.host, self.port = host, int(bound[1])
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}{path}"

    def start(self) -> SimulatorServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"cdr-simulator:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listener and every kept-alive connection."""
        self._httpd.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.close_connections()
        self._httpd.server_close()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

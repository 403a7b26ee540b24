"""The API client over httpx.MockTransport: requests, classification, retries, secrecy."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest

from etl.api.client import CdrApiClient, Credentials, RequestStats
from etl.api.retry import RetryPolicy, parse_retry_after
from etl.errors import (
    AuthError,
    ConfigError,
    EtlError,
    FatalSourceError,
    SourceError,
    TransientSourceError,
)

PASSWORD = "98765432109"
CREDS = Credentials("8569841", PASSWORD)
URL = "https://callmyway.example/getCdrs.php"
START, END = datetime(2024, 5, 1, 10), datetime(2024, 5, 1, 11)
ROWS = [{"callid": "1", "duration": "35"}, {"callid": "2", "duration": 0}]

Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Server:
    """A scripted MockTransport handler: replies in order (the last one repeats)."""

    def __init__(self, *replies: Reply, clock: FakeTime | None = None, cost: float = 0.0) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []
        self.clock = clock
        self.cost = cost

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.clock is not None:
            self.clock.now += self.cost
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        if callable(reply) and not isinstance(reply, httpx.Response):
            return reply(request)
        return reply


class FakeTime:
    """An injected clock and sleep: sleeping records the wait and advances the clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(float(seconds))
        self.now += seconds

    def clock(self) -> float:
        return self.now


def make(server: Server, time: FakeTime | None = None, **kwargs: Any) -> CdrApiClient:
    fake = time or FakeTime()
    kwargs.setdefault("retry", RetryPolicy())
    return CdrApiClient(
        kwargs.pop("url", URL),
        transport=httpx.MockTransport(server),
        sleep=fake.sleep,
        clock=fake.clock,
        **kwargs,
    )


def ok(body: bytes | str, **headers: str) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return httpx.Response(
        200, content=content, headers={"Content-Length": str(len(content)), **headers}
    )


def json_ok(value: Any) -> httpx.Response:
    return ok(orjson.dumps(value), **{"Content-Type": "text/plain; charset=UTF-8"})


def page(client: CdrApiClient, stats: RequestStats | None = None) -> list[dict[str, Any]]:
    return client.fetch_page(CREDS, START, END, 0, 1000, stats)


# --- requests -----------------------------------------------------------------------------------


def test_fetch_page_sends_the_documented_query() -> None:
    """A by-date page sends every parameter, the real password only on the wire."""
    server = Server(json_ok(ROWS))
    with make(server, fmt="json") as client:
        assert client.fetch_page(CREDS, START, END, 2000, 1000) == ROWS
    params = server.requests[0].url.params
    assert dict(params) == {
        "username": "8569841",
        "password": PASSWORD,
        "dateStart": "2024-05-01 10:00:00",
        "dateEnd": "2024-05-01 11:00:00",
        "ini": "2000",
        "cant": "1000",
        "format": "json",
    }
    assert server.requests[0].url.path == "/getCdrs.php"


def test_live_and_recent_queries() -> None:
    """Live asks live=1 with fullAccount; recent asks recent=1 with its own longer timeout."""
    server = Server(json_ok(ROWS))
    with make(server, fmt="csv", timeout=10, recent_timeout=99) as client:
        client.fetch_live(CREDS)
        client.fetch_live(CREDS, full_account=False)
        client.fetch_recent(CREDS)
        client.fetch_page(CREDS, START, END, 0, 5)
    live, own, recent, by_date = (dict(r.url.params) for r in server.requests)
    assert live == {
        "username": "8569841",
        "password": PASSWORD,
        "live": "1",
        "fullAccount": "1",
        "format": "csv",
    }
    assert own["fullAccount"] == "0"
    assert recent == {"username": "8569841", "password": PASSWORD, "recent": "1", "format": "csv"}
    assert "dateStart" in by_date
    timeouts = [r.extensions["timeout"]["read"] for r in server.requests]
    assert timeouts == [10, 10, 99, 10]


def test_fetch_page_wants_naive_local_times_and_sane_paging() -> None:
    """Aware datetimes, a negative ini or a zero cant are refused before any request."""
    server = Server(json_ok([]))
    with make(server) as client:
        with pytest.raises(ValueError, match="naive"):
            client.fetch_page(CREDS, START.replace(tzinfo=UTC), END, 0, 10)
        with pytest.raises(ValueError, match="ini"):
            client.fetch_page(CREDS, START, END, -1, 10)
    assert server.requests == []


@pytest.mark.parametrize(
    "value",
    [ROWS, {"cdrs": ROWS}, {"data": ROWS}, {"records": ROWS}, {"status": "ok", "data": ROWS}],
)
def test_every_json_envelope_gives_the_records(value: Any) -> None:
    """Bare list and the cdrs/data/records envelopes come back as the same records."""
    with make(Server(json_ok(value))) as client:
        assert page(client) == ROWS


def test_csv_and_html_bodies() -> None:
    """The client decodes the format it asked for."""
    csv_body = "callid,duration\n1,35\n2,0\n"
    html_body = (
        "<table><tr><th>callid</th><th>duration</th></tr>"
        "<tr><td>1</td><td>35</td></tr><tr><td>2</td><td>0</td></tr></table>"
    )
    expected = [{"callid": "1", "duration": "35"}, {"callid": "2", "duration": "0"}]
    with make(Server(ok(csv_body)), fmt="csv") as client:
        assert page(client) == expected
    with make(Server(ok(html_body)), fmt="html") as client:
        assert page(client) == expected


# --- empty bodies -----------------------------------------------------------------------------


def test_an_empty_body_is_a_transient_error_by_default() -> None:
    """An empty 200 body, even whole, is never taken for "no more rows": retried, then
    raised (an empty window answers [])."""
    stats = RequestStats()
    server = Server(httpx.Response(200, content=b"", headers={"Content-Length": "0"}))
    with (
        make(server, retry=RetryPolicy(max_attempts=3)) as client,
        pytest.raises(TransientSourceError, match="empty body"),
    ):
        page(client, stats)
    assert stats.errors == {"empty": 3}


def test_an_empty_body_with_a_length_is_no_rows_when_configured() -> None:
    """With empty_body_is_no_rows, a 200 whose framing proves it whole is an empty page."""
    framed = [
        httpx.Response(200, content=b"", headers={"Content-Length": "0"}),
        httpx.Response(
            200, stream=httpx.ByteStream(b"\n"), headers={"Transfer-Encoding": "chunked"}
        ),
        httpx.Response(204),
    ]
    for response in framed:
        with make(Server(response), empty_body_is_no_rows=True) as client:
            assert page(client) == []


def test_an_unframed_empty_body_is_transient() -> None:
    """An empty 200 without any framing may have been cut to nothing: retried, then raised."""
    stats = RequestStats()
    server = Server(httpx.Response(200, stream=httpx.ByteStream(b"")))
    with (
        make(server, retry=RetryPolicy(max_attempts=3)) as client,
        pytest.raises(TransientSourceError, match="empty body"),
    ):
        page(client, stats)
    assert stats.errors == {"truncated": 3}


# --- classification -------------------------------------------------------------------------------

RETRYABLE = [
    (httpx.Response(500, text="oops"), "5xx"),
    (httpx.Response(502, html="<h1>Bad gateway</h1>"), "5xx"),
    (httpx.Response(503), "5xx"),
    (httpx.Response(504), "5xx"),
    (httpx.Response(429), "429"),
    (httpx.Response(408), "timeout"),
    (httpx.ConnectError("refused"), "connect"),
    (httpx.ConnectTimeout("slow connect"), "timeout"),
    (httpx.ReadTimeout("slow read"), "timeout"),
    (httpx.PoolTimeout("pool"), "timeout"),
    (httpx.ReadError("reset"), "network"),
    (httpx.WriteError("broken pipe"), "network"),
    (httpx.RemoteProtocolError("Server disconnected without sending a response."), "disconnect"),
    (
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        "truncated",
    ),
    (httpx.RemoteProtocolError("illegal header"), "protocol"),
    (httpx.DecodingError("bad gzip"), "undecodable"),
    (httpx.ProxyError("proxy"), "connect"),
    (ok(orjson.dumps(ROWS)[:-5]), "truncated"),
    (ok("Error: database busy"), "error_200"),
    (
        ok("<html><body><h1>502 Bad Gateway</h1></body></html>", **{"Content-Type": "text/html"}),
        "error_200",
    ),
    (ok("\x00\x01garbage"), "undecodable"),
]


@pytest.mark.parametrize(("reply", "kind"), RETRYABLE)
def test_transient_failures_are_retried_to_the_attempt_cap(reply: Reply, kind: str) -> None:
    """Each transient failure kind is retried max_attempts times, counted, then raised as is."""
    stats = RequestStats()
    time = FakeTime()
    server = Server(reply)
    client = make(server, time, retry=RetryPolicy(max_attempts=4))
    with client, pytest.raises(TransientSourceError) as caught:
        page(client, stats)
    assert len(server.requests) == 4
    assert (stats.requests, stats.retries, dict(stats.errors)) == (4, 3, {kind: 4})
    assert len(time.waits) == 3
    assert "8569841 by-date window 2024-05-01 10:00:00..2024-05-01 11:00:00 ini=0" in str(
        caught.value
    )


FATAL = [
    (httpx.Response(401), AuthError, "auth"),
    (httpx.Response(403), AuthError, "auth"),
    (httpx.Response(400), FatalSourceError, "4xx"),
    (httpx.Response(404), FatalSourceError, "4xx"),
    (
        httpx.Response(301, headers={"Location": f"https://x/?password={PASSWORD}"}),
        FatalSourceError,
        "redirect",
    ),
    (json_ok({"error": "Invalid username or password"}), AuthError, "auth"),
    (ok("Invalid username"), AuthError, "auth"),
    (ok(b"<html><body><form>Login</form></body></html>"), AuthError, "auth"),
    (
        json_ok({"error": "Invalid date format, expected yyyy-mm-dd HH:ii:ss"}),
        FatalSourceError,
        "error_200",
    ),
    (httpx.UnsupportedProtocol("nope"), FatalSourceError, "request"),
    (RuntimeError("handler bug"), FatalSourceError, "unexpected"),
]


@pytest.mark.parametrize(("reply", "error", "kind"), FATAL)
def test_fatal_failures_are_not_retried(reply: Reply, error: type[SourceError], kind: str) -> None:
    """Auth errors (401/403 or a 200 message) and other refusals fail at once, never retried."""
    stats = RequestStats()
    time = FakeTime()
    server = Server(reply)
    with make(server, time) as client, pytest.raises(error) as caught:
        page(client, stats)
    if error is FatalSourceError:
        assert not isinstance(caught.value, AuthError)
    assert len(server.requests) == 1
    assert time.waits == []
    assert (stats.requests, stats.retries, dict(stats.errors)) == (1, 0, {kind: 1})


def test_recovery_after_transient_failures() -> None:
    """Two failures then a good page: the page is returned, and the stats tell the story."""
    stats = RequestStats()
    server = Server(httpx.ReadTimeout("t"), httpx.Response(503), json_ok(ROWS))
    with make(server) as client:
        assert page(client, stats) == ROWS
    assert (stats.requests, stats.retries) == (3, 2)
    assert stats.errors == {"timeout": 1, "5xx": 1}


def test_the_last_error_itself_is_raised() -> None:
    """After the last attempt the last TransientSourceError is raised, not tenacity's RetryError."""
    server = Server(httpx.ReadTimeout("t"), httpx.ConnectError("c"), httpx.Response(503))
    client = make(server, retry=RetryPolicy(max_attempts=3))
    with client, pytest.raises(TransientSourceError, match="HTTP 503") as caught:
        page(client)
    assert type(caught.value) is TransientSourceError
    assert caught.value.__context__ is None


# --- waits ----------------------------------------------------------------------------------------


def test_waits_are_exponential_without_jitter() -> None:
    """Without jitter the waits double from base and stop at cap."""
    time = FakeTime()
    policy = RetryPolicy(max_attempts=7, base=0.5, cap=5.0, max_total=1000, jitter=False)
    client = make(Server(httpx.Response(500)), time, retry=policy)
    with client, pytest.raises(TransientSourceError):
        page(client)
    assert time.waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_waits_are_full_jitter_within_bounds() -> None:
    """With jitter each wait lies in [0, min(cap, base*2^n)], and they are not all the step."""
    time = FakeTime()
    policy = RetryPolicy(max_attempts=6, base=1.0, cap=8.0, max_total=10_000)
    for _ in range(20):
        client = make(Server(httpx.Response(500)), time, retry=policy)
        with client, pytest.raises(TransientSourceError):
            page(client)
    steps = [1.0, 2.0, 4.0, 8.0, 8.0] * 20
    assert len(time.waits) == len(steps)
    assert all(0.0 <= w <= s for w, s in zip(time.waits, steps, strict=True))
    assert any(w < s for w, s in zip(time.waits, steps, strict=True))


def test_retry_after_seconds_is_honoured() -> None:
    """A 429 Retry-After of 7 s is waited in full (at least), then the request succeeds."""
    time = FakeTime()
    server = Server(httpx.Response(429, headers={"Retry-After": "7"}), json_ok(ROWS))
    with make(server, time) as client:
        assert page(client) == ROWS
    assert time.waits == [7.0]


def test_retry_after_zero_still_backs_off() -> None:
    """Retry-After: 0 waits the un-jittered exponential step, never zero."""
    time = FakeTime()
    reply = httpx.Response(503, headers={"Retry-After": "0"})
    server = Server(reply, reply, json_ok(ROWS))
    with make(server, time, retry=RetryPolicy(base=0.5)) as client:
        assert page(client) == ROWS
    assert time.waits == [0.5, 1.0]


def test_retry_after_http_date_is_honoured() -> None:
    """A Retry-After HTTP-date about a minute ahead gives a wait of about a minute."""
    time = FakeTime()
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=62), usegmt=True)
    server = Server(httpx.Response(503, headers={"Retry-After": when}), json_ok(ROWS))
    with make(server, time) as client:
        assert page(client) == ROWS
    assert 55 <= time.waits[0] <= 63


def test_retry_after_is_kept_on_the_error() -> None:
    """The parsed Retry-After travels on the raised error as .retry_after."""
    server = Server(httpx.Response(429, headers={"Retry-After": "2"}))
    client = make(server, retry=RetryPolicy(max_attempts=2))
    with client, pytest.raises(TransientSourceError) as caught:
        page(client)
    assert caught.value.retry_after == 2.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("soon", None),
        ("-3", None),
        ("nan", None),
        ("5", 5.0),
        ("1.5", 1.5),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    """Retry-After parses delta-seconds and HTTP-dates (a past date is 0), junk is ignored."""
    assert parse_retry_after(value, datetime.now(UTC)) == seconds


def test_total_time_cap_stops_before_the_budget_is_spent() -> None:
    """Retries stop before a wait would end past max_total, counting request time too."""
    time = FakeTime()
    policy = RetryPolicy(max_attempts=50, base=1.0, cap=100, max_total=20, jitter=False)
    server = Server(httpx.Response(500), clock=time, cost=1.0)
    with make(server, time, retry=policy) as client, pytest.raises(TransientSourceError):
        page(client)
    # attempt 1 at t=0..1, wait 1; t=2..3, wait 2; t=5..6, wait 4; t=10..11, wait 8 would end
    # at 19 <= 20: allowed; t=19..20, wait 16 would end at 36 > 20: stop.
    assert time.waits == [1.0, 2.0, 4.0, 8.0]
    assert len(server.requests) == 5


def test_a_retry_after_beyond_the_budget_ends_the_retries() -> None:
    """A Retry-After longer than the whole budget is not slept: the error is raised at once."""
    time = FakeTime()
    server = Server(httpx.Response(429, headers={"Retry-After": "3600"}))
    client = make(server, time, retry=RetryPolicy(max_total=300))
    with client, pytest.raises(TransientSourceError):
        page(client)
    assert time.waits == []
    assert len(server.requests) == 1


def test_one_warning_per_retry_without_url(caplog: pytest.LogCaptureFixture) -> None:
    """Each retry logs one WARNING with account, mode, window, attempt, kind and wait."""
    caplog.set_level(logging.WARNING, logger="etl.api.client")
    server = Server(httpx.Response(503, headers={"Retry-After": "3"}), json_ok(ROWS))
    with make(server) as client:
        page(client)
    lines = [r.getMessage() for r in caplog.records if r.name == "etl.api.client"]
    assert lines == [
        "API request failed, retrying: account=8569841 mode=by-date "
        "window=2024-05-01 10:00:00..2024-05-01 11:00:00 ini=0 attempt=1/6 kind=5xx wait=3.00s"
    ]


# --- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://callmyway.com/getCdrs.php",
        "http://10.0.0.5:8080/getCdrs.php",
        "http://[2001:db8::1]/getCdrs.php",
        "http://localhost.evil.com/getCdrs.php",
    ],
)
def test_plain_http_to_a_remote_host_is_refused(url: str) -> None:
    """Credentials never go over plain http to a non-loopback host unless allowed."""
    with pytest.raises(ConfigError, match="plain http"):
        CdrApiClient(url)
    CdrApiClient(url, allow_http=True).close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/getCdrs.php",
        "http://127.9.8.7/getCdrs.php",
        "http://[::1]:8000/getCdrs.php",
        "http://localhost:8000/getCdrs.php",
        "http://sim.localhost/getCdrs.php",
        "https://callmyway.com/getCdrs.php",
    ],
)
def test_https_and_loopback_are_accepted(url: str) -> None:
    """HTTPS anywhere, and plain http to loopback (the simulator), are accepted."""
    CdrApiClient(url).close()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("ftp://callmyway.com/getCdrs.php", "http"),
        ("callmyway.com/getCdrs.php", "http"),
        (f"https://callmyway.com/getCdrs.php?password={PASSWORD}", "credentials"),
        (f"https://u:{PASSWORD}@callmyway.com/getCdrs.php", "credentials"),
    ],
)
def test_bad_urls_are_config_errors(url: str, match: str) -> None:
    """A URL that is not http(s), or carries credentials, is refused without echoing it."""
    with pytest.raises(ConfigError, match=match) as caught:
        CdrApiClient(url)
    assert PASSWORD not in str(caught.value)


def test_bad_format_and_timeouts_are_config_errors() -> None:
    """An unknown format or a non-positive timeout is a ConfigError."""
    with pytest.raises(ConfigError, match="format"):
        CdrApiClient(URL, fmt="xml")
    with pytest.raises(ConfigError, match="timeout"):
        CdrApiClient(URL, timeout=0)
    with pytest.raises(ConfigError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_credentials_never_show_the_password() -> None:
    """repr(), str() and format() of Credentials omit the password."""
    for text in (repr(CREDS), str(CREDS), f"{CREDS}", repr([CREDS])):
        assert PASSWORD not in text
        assert "8569841" in text


# --- threads --------------------------------------------------------------------------------------


def test_one_client_serves_many_threads() -> None:
    """One client shared by 8 threads answers every request and counts each one once."""
    stats = RequestStats()
    server = Server(httpx.Response(503), json_ok(ROWS))
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            return server(request)

    client = CdrApiClient(URL, transport=httpx.MockTransport(handler), sleep=lambda s: None)
    with client, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: page(client, stats), range(40)))
    assert all(r == ROWS for r in results)
    assert stats.requests == 41
    assert stats.retries == 1


# --- secrecy --------------------------------------------------------------------------------------


def texts_of(error: BaseException) -> Iterator[str]:
    """Every text an error can show: str, repr, the chain, and its formatted traceback."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield "".join(traceback.format_exception(current))
        with contextlib.suppress(RuntimeError):  # httpx raises when .request was never set
            yield repr(getattr(current, "request", ""))
        current = current.__cause__ or current.__context__


SECRET_FAULTS: list[Reply] = [
    httpx.ConnectError(f"cannot reach {URL}?password={PASSWORD}"),
    httpx.ReadTimeout(f"timed out reading {URL}?password={PASSWORD}"),
    httpx.RemoteProtocolError(f"peer closed {URL}?password={PASSWORD}"),
    httpx.ReadError(f"reset {PASSWORD}"),
    httpx.DecodingError(f"bad gzip {PASSWORD}"),
    ValueError(f"handler bug {PASSWORD}"),
    httpx.Response(500, text=f"stack trace with {PASSWORD}"),
    httpx.Response(429, headers={"Retry-After": "1"}),
    httpx.Response(401, text=f"bad password {PASSWORD}"),
    httpx.Response(404),
    httpx.Response(302, headers={"Location": f"{URL}?password={PASSWORD}"}),
    ok(f"Invalid password {PASSWORD}"),
    ok(f"Error: database busy for {PASSWORD}"),
    ok(f"<html><body>Proxy error for /getCdrs.php?password={PASSWORD}</body></html>"),
    json_ok({"error": f"Invalid username or password ({PASSWORD})"}),
    json_ok({"error": f"Invalid date for password={PASSWORD}"}),
    ok(orjson.dumps([{"callid": PASSWORD}] * 3)[:-7]),
    ok(f'callid\n{PASSWORD}\n"open'),
    httpx.Response(200, stream=httpx.ByteStream(b"")),
]


def test_the_password_appears_nowhere(caplog: pytest.LogCaptureFixture) -> None:
    """Every fault kind, all loggers at DEBUG: the password is in no log, error text or repr."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "tenacity", "etl"):
        caplog.set_level(logging.DEBUG, logger=name)
    shown: list[str] = [repr(CREDS), str(CREDS)]
    on_the_wire: list[str] = []

    def spy(reply: Reply) -> Callable[[httpx.Request], httpx.Response]:
        def handler(request: httpx.Request) -> httpx.Response:
            on_the_wire.append(request.url.params.get("password", ""))
            if isinstance(reply, Exception):
                raise reply
            assert isinstance(reply, httpx.Response)
            return reply

        return handler

    stats = RequestStats()
    for reply in [*SECRET_FAULTS, json_ok([{"callid": "1"}])]:
        server = Server(spy(reply))
        with make(server, retry=RetryPolicy(max_attempts=2)) as client:
            calls: list[Callable[[], list[dict[str, Any]]]] = [
                lambda: page(client, stats),
                lambda: client.fetch_live(CREDS, stats=stats),
                lambda: client.fetch_recent(CREDS, stats),
            ]
            for call in calls:
                try:
                    shown.append(repr(call()))
                except EtlError as error:
                    shown.extend(texts_of(error))
    shown.append(repr(stats))
    shown.append(caplog.text)
    shown.extend(r.getMessage() for r in caplog.records)
    shown.extend(str(r.__dict__) for r in caplog.records)
    assert set(on_the_wire) == {PASSWORD}  # it did travel, where it must
    assert len(stats.errors) >= 10
    leaks = [text for text in shown if PASSWORD in text]
    assert leaks == []
    assert any("HTTP Request: GET" in r.getMessage() for r in caplog.records)  # httpx logged


# --- a real socket on loopback -------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        mode = self.server.modes.pop(0)  # type: ignore[attr-defined]
        getattr(self.server, "paths", []).append(self.path)
        body = orjson.dumps(ROWS)
        if mode == "drop":
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncate":
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        else:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def loopback() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_real_socket_drop_and_truncation_are_retried_and_secret(
    loopback: ThreadingHTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    """On a real socket, a drop and a cut body are retried; httpcore's DEBUG trace stays secret."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "httpcore.connection", "httpcore.http11"):
        caplog.set_level(logging.DEBUG, logger=name)
    loopback.modes = ["drop", "truncate", "ok"]  # type: ignore[attr-defined]
    host, port = loopback.server_address[:2]
    stats = RequestStats()
    time = FakeTime()
    with CdrApiClient(
        f"http://{host!s}:{port}/getCdrs.php", sleep=time.sleep, clock=time.clock, timeout=5
    ) as client:
        assert page(client, stats) == ROWS
    assert stats.errors == {"disconnect": 1, "truncated": 1}
    assert stats.retries == 2
    assert any(r.name.startswith("httpcore") for r in caplog.records)
    assert PASSWORD not in caplog.text


def test_an_environment_proxy_is_used_and_gets_the_password(
    loopback: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY from the environment carries the request, with the real password in it."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    host, port = loopback.server_address[:2]
    monkeypatch.setenv("HTTP_PROXY", f"http://{host!s}:{port}")
    loopback.modes = ["ok"]  # type: ignore[attr-defined]
    loopback.paths = []  # type: ignore[attr-defined]
    url = "http://cdr-api.invalid/getCdrs.php"  # resolved by the proxy only
    with CdrApiClient(url, allow_http=True, sleep=lambda s: None) as client:
        assert page(client) == ROWS
    (target,) = loopback.paths  # type: ignore[attr-defined]
    assert target.startswith(f"{url}?")
    assert httpx.URL(target).params["password"] == PASSWORD


def test_real_socket_connection_refused_is_transient() -> None:
    """A closed loopback port is a transient 'connect' failure."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stats = RequestStats()
    client = CdrApiClient(
        f"http://127.0.0.1:{port}/x", sleep=lambda s: None, retry=RetryPolicy(max_attempts=2)
    )
    with client, pytest.raises(TransientSourceError, match="cannot connect"):
        page(client, stats)
    assert stats.errors == {"connect": 2}

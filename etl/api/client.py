"""The HTTP client of getCdrs.php: one request, retried, classified, and kept secret.

This is the one boundary where httpx errors become our errors:

    httpx timeout                          -> TransientSourceError   kind "timeout"
    connect error, proxy error             -> TransientSourceError   kind "connect"
    dropped connection / body cut short    -> TransientSourceError   kind "disconnect"/"truncated"
    read/write error, other protocol error -> TransientSourceError   kind "network"/"protocol"
    content-encoding undecodable           -> TransientSourceError   kind "undecodable"
    HTTP 5xx / 429 (Retry-After parsed)    -> TransientSourceError   kind "5xx" / "429"
    HTTP 408                               -> TransientSourceError   kind "timeout"
    HTTP 401 / 403                         -> AuthError              kind "auth"
    HTTP 3xx (never followed) / other 4xx  -> FatalSourceError       kind "redirect" / "4xx"
    HTTP 200 that is not data              -> per `decode`           kind "truncated",
                                              "undecodable", "error_200", "auth"
    an empty 200 body                      -> TransientSourceError kind "empty" (kind
                                              "truncated" without framing); no rows only
                                              with `empty_body_is_no_rows=True`

Only TransientSourceError is retried (tenacity, the waits of `retry.RetryPolicy`, the
injected `sleep` and `clock`); after the last attempt the last TransientSourceError itself
is raised.

Secrets. The password must reach the wire and nothing else:
- requests are built with `password=***`; a wrapping transport puts the real value in just
  before the request leaves, so httpx's own "HTTP Request: GET <url>" log line, the
  `response.request` and anything built from the request we hold show `***`;
- the `httpx`/`httpcore` loggers carry a `RedactingFilter`, and each password is
  registered with it (defence in depth);
- every exception message is built from fields (mode, window, ini, status, kind), never
  from an httpx error or a URL, and is raised outside the `except` block, so no httpx
  error hangs on as `__context__`; text quoted from a body is redacted;
- `Credentials` never shows the password in `repr()` or `str()`.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from etl.api.decode import BodyFormat, decode
from etl.api.retry import RetryPolicy, parse_retry_after
from etl.errors import (
    AuthError,
    ConfigError,
    FatalSourceError,
    SourceError,
    TransientSourceError,
)
from etl.redact import MASK, RedactingFilter, redact

__all__ = ["DEFAULT_RETRY", "CdrApiClient", "Credentials", "RequestStats", "RetryPolicy"]

log = logging.getLogger(__name__)

DEFAULT_RETRY = RetryPolicy()
_FORMATS: tuple[BodyFormat, ...] = ("json", "csv", "html")
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_PASSWORD_EXTENSION = "cdr_etl.password"
_BOM = b"\xef\xbb\xbf"
_PROTECTED_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "tenacity",
)

Mode = Literal["by-date", "live", "recent"]


@dataclass(frozen=True)
class Credentials:
    """One account's login. The password never appears in `repr()` or `str()`."""

    username: str
    password: str = field(repr=False)

    def __str__(self) -> str:
        return repr(self)


@dataclass
class RequestStats:
    """Counters of one run; the client adds to them (thread-safe)."""

    requests: int = 0
    retries: int = 0
    disturbed: int = 0  # windows whose walk met a callid on two pages
    reread_requests: int = 0  # requests of those windows' order-proof reads
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    _lock: threading.Lock = field(
        default_factory=threading.Lock, repr=False, compare=False, init=False
    )

    def add_request(self) -> None:
        with self._lock:
            self.requests += 1

    def add_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def add_disturbed(self) -> None:
        with self._lock:
            self.disturbed += 1

    def add_reread(self, requests: int) -> None:
        with self._lock:
            self.reread_requests += requests

    def add_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1


@dataclass(frozen=True)
class _Call:
    """What one logical request is, for messages and logs (never the URL)."""

    username: str
    mode: Mode
    window: str = "-"
    ini: int | None = None

    def __str__(self) -> str:
        where = f" window {self.window}" if self.window != "-" else ""
        offset = f" ini={self.ini}" if self.ini is not None else ""
        return f"account {self.username} {self.mode}{where}{offset}"


class _PasswordTransport(httpx.BaseTransport):
    """Puts the real password into the query just before the request leaves.

    Requests carry `password=***` and the secret in a private extension; everything that
    keeps or logs our request object (httpx's log line, `response.request`) sees `***`.
    """

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        extensions = dict(request.extensions)
        password = extensions.pop(_PASSWORD_EXTENSION, None)
        if isinstance(password, str):
            request = httpx.Request(
                request.method,
                request.url.copy_set_param("password", password),
                headers=request.headers,
                stream=request.stream,
                extensions=extensions,
            )
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def _is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _checked_url(url: str, allow_http: bool) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise ConfigError("api.url: not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError("api.url: must be an http(s) URL with a host")
    if parsed.userinfo or any(key.lower() == "password" for key in parsed.params):
        raise ConfigError("api.url: must not carry credentials (they are sent per account)")
    if parsed.scheme == "http" and not allow_http and not _is_loopback(parsed.host):
        raise ConfigError(
            f"api.url: refusing to send credentials over plain http to {parsed.host}; "
            "use https, a loopback host, or allow plain http explicitly"
        )
    return parsed


def _default_transport(url: httpx.URL) -> httpx.BaseTransport:
    """A real transport, through the proxy the environment names for our one URL, if any
    (never for loopback: a proxy's loopback is not ours).

    (httpx ignores HTTP(S)_PROXY when handed a transport, and we always hand it ours.)
    """
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not _is_loopback(url.host) and not urllib.request.proxy_bypass(url.host):
        return httpx.HTTPTransport(proxy=proxy)
    return httpx.HTTPTransport()


def _format_time(moment: datetime, name: str) -> str:
    if moment.tzinfo is not None:
        raise ValueError(f"{name} must be a naive provider wall-clock time")
    return moment.strftime(_TIME_FORMAT)


class CdrApiClient:
    """getCdrs.php over one pooled httpx.Client; safe to share between threads."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        fmt: str = "json",
        retry: RetryPolicy = DEFAULT_RETRY,
        allow_http: bool = False,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], object] = time.sleep,
        recent_timeout: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        empty_body_is_no_rows: bool = False,
    ) -> None:
        self._url = _checked_url(url, allow_http)
        self._empty_is_no_rows = empty_body_is_no_rows
        if fmt not in _FORMATS:
            raise ConfigError(f"api.format: must be one of {', '.join(_FORMATS)}")
        if timeout <= 0 or recent_timeout <= 0:
            raise ConfigError("api.timeout: must be positive")
        self._fmt: BodyFormat = _FORMATS[_FORMATS.index(fmt)]  # typed as the literal
        self._timeout = timeout
        self._recent_timeout = recent_timeout
        self._retry = retry
        self._sleep = sleep
        self._clock = clock
        for name in _PROTECTED_LOGGERS:
            RedactingFilter.install(logging.getLogger(name))
        self._http = httpx.Client(
            transport=_PasswordTransport(transport or _default_transport(self._url)),
            timeout=timeout,
            follow_redirects=False,
            headers={"User-Agent": "cdr-etl"},
        )

    # --- the three modes ---------------------------------------------------------------

    def fetch_page(
        self,
        creds: Credentials,
        date_start: datetime,
        date_end: datetime,
        ini: int,
        cant: int,
        stats: RequestStats | None = None,
    ) -> list[dict[str, Any]]:
        """One page of completed CDRs: `cant` records from offset `ini` of the window."""
        if ini < 0 or cant < 1:
            raise ValueError("ini must be >= 0 and cant >= 1")
        start = _format_time(date_start, "date_start")
        end = _format_time(date_end, "date_end")
        params = {
            "username": creds.username,
            "password": MASK,
            "dateStart": start,
            "dateEnd": end,
            "ini": str(ini),
            "cant": str(cant),
            "format": self._fmt,
        }
        call = _Call(creds.username, "by-date", f"{start}..{end}", ini)
        return self._request(creds, params, call, self._timeout, stats)

    def fetch_live(
        self, creds: Credentials, *, full_account: bool = True, stats: RequestStats | None = None
    ) -> list[dict[str, Any]]:
        """The calls connected or connecting now (of the whole account by default)."""
        params = {
            "username": creds.username,
            "password": MASK,
            "live": "1",
            "fullAccount": "1" if full_account else "0",
            "format": self._fmt,
        }
        return self._request(creds, params, _Call(creds.username, "live"), self._timeout, stats)

    def fetch_recent(
        self, creds: Credentials, stats: RequestStats | None = None
    ) -> list[dict[str, Any]]:
        """The completed CDRs of the last 24 h: one unpaged answer, with its own timeout."""
        params = {"username": creds.username, "password": MASK, "recent": "1", "format": self._fmt}
        call = _Call(creds.username, "recent")
        return self._request(creds, params, call, self._recent_timeout, stats)

    # --- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- one logical request, retried ----------------------------------------------------

    def _request(
        self,
        creds: Credentials,
        params: dict[str, str],
        call: _Call,
        timeout: float,
        stats: RequestStats | None,
    ) -> list[dict[str, Any]]:
        RedactingFilter.register(creds.password)
        counters = stats if stats is not None else RequestStats()
        kinds: list[str] = []
        started = self._clock()
        policy = self._retry

        def attempt() -> list[dict[str, Any]]:
            counters.add_request()
            try:
                return self._attempt(creds, params, call, timeout)
            except SourceError as error:
                counters.add_error(error.kind)
                kinds.append(error.kind)
                raise

        def wait(state: RetryCallState) -> float:
            return policy.wait(state.attempt_number, _retry_after(state))

        def stop(state: RetryCallState) -> bool:
            elapsed = self._clock() - started
            return policy.should_stop(state.attempt_number, elapsed, state.upcoming_sleep)

        def before_sleep(state: RetryCallState) -> None:
            counters.add_retry()
            _log_retry(call, state, policy.max_attempts, kinds[-1] if kinds else "?")

        retrying = Retrying(
            sleep=self._pause,
            retry=retry_if_exception_type(TransientSourceError),
            wait=wait,
            stop=stop,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(attempt)

    def _pause(self, seconds: float) -> None:
        self._sleep(seconds)

    def _attempt(
        self, creds: Credentials, params: dict[str, str], call: _Call, timeout: float
    ) -> list[dict[str, Any]]:
        """One HTTP exchange: the records, or the SourceError (with its kind) it was."""
        try:
            response = self._http.get(
                self._url,
                params=params,
                timeout=timeout,
                extensions={_PASSWORD_EXTENSION: creds.password},
            )
        except httpx.HTTPError as error:
            failure = _transport_failure(error, call, timeout)
        except Exception as error:  # the boundary: nothing foreign (nor its URL) passes it
            failure = FatalSourceError(
                f"{call}: unexpected {type(error).__name__} from the transport", kind="unexpected"
            )
        else:
            return self._answer(response, creds, call)
        raise failure  # outside the handler: the foreign error is not chained to ours

    def _answer(
        self, response: httpx.Response, creds: Credentials, call: _Call
    ) -> list[dict[str, Any]]:
        status = response.status_code
        if 200 <= status < 300:
            return self._body(response, creds, call)
        retry_after = parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC))
        if status == 429:
            raise TransientSourceError(
                _status_text(call, status, retry_after), retry_after=retry_after, kind="429"
            )
        if status >= 500:
            raise TransientSourceError(
                _status_text(call, status, retry_after), retry_after=retry_after, kind="5xx"
            )
        if status == 408:
            raise TransientSourceError(_status_text(call, status, None), kind="timeout")
        if status in (401, 403):
            raise AuthError(f"{call}: credentials refused (HTTP {status})", kind="auth")
        if 300 <= status < 400:
            raise FatalSourceError(
                f"{call}: redirected (HTTP {status}); set api.url to the final address",
                kind="redirect",
            )
        raise FatalSourceError(f"{call}: request refused (HTTP {status})", kind="4xx")

    def _body(
        self, response: httpx.Response, creds: Credentials, call: _Call
    ) -> list[dict[str, Any]]:
        body = response.content
        if not body.strip().removeprefix(_BOM).strip():
            if not _framed(response):
                raise TransientSourceError(
                    f"{call}: empty body without a length (maybe cut short)", kind="truncated"
                )
            if not self._empty_is_no_rows:
                # An empty window answers `[]` (or an empty table); a bare empty body is
                # what a server error can look like, and taking it for "no more rows"
                # would end a window early. Retried, then the run fails; a provider that
                # answers empty windows this way is configured with
                # api.empty_body_is_no_data = true.
                raise TransientSourceError(
                    f"{call}: empty body on HTTP {response.status_code}", kind="empty"
                )
        try:
            return decode(body, response.headers.get("content-type"), self._fmt)
        except SourceError as error:
            failure = _retold(error, call, creds.password)
        raise failure  # outside the handler: the unredacted error is not chained


def _framed(response: httpx.Response) -> bool:
    """Did the framing prove the body whole (httpx raises when a framed body is cut)?"""
    if response.status_code == 204 or "content-length" in response.headers:
        return True
    return "chunked" in response.headers.get("transfer-encoding", "").lower()


def _retold(error: SourceError, call: _Call, password: str) -> SourceError:
    """The same kind of error, its message prefixed with the call and redacted."""
    message = f"{call}: {redact(str(error), [password])}"
    if isinstance(error, TransientSourceError):
        return type(error)(message, kind=error.kind, retry_after=error.retry_after)
    return type(error)(message, kind=error.kind)


def _status_text(call: _Call, status: int, retry_after: float | None) -> str:
    hint = f", Retry-After {retry_after:g}s" if retry_after is not None else ""
    return f"{call}: HTTP {status}{hint}"


def _transport_failure(error: httpx.HTTPError, call: _Call, timeout: float) -> SourceError:
    """The SourceError an httpx error stands for, classified by its type only (its message
    may hold the URL): translated here, once, at the boundary."""
    name = type(error).__name__
    if isinstance(error, httpx.TimeoutException):
        return TransientSourceError(f"{call}: {name} after {timeout:g}s", kind="timeout")
    if isinstance(error, httpx.ConnectError | httpx.ProxyError):
        return TransientSourceError(f"{call}: cannot connect ({name})", kind="connect")
    if isinstance(error, httpx.RemoteProtocolError):
        detail = str(error)  # read to classify, never repeated: it is httpcore's, not ours
        if "message body" in detail:
            kind, what = "truncated", "body cut short"
        elif "without sending a response" in detail:
            kind, what = "disconnect", "connection dropped before an answer"
        else:
            kind, what = "protocol", "broken HTTP answer"
        return TransientSourceError(f"{call}: {what} ({name})", kind=kind)
    if isinstance(error, httpx.NetworkError):
        return TransientSourceError(f"{call}: network error ({name})", kind="network")
    if isinstance(error, httpx.DecodingError):
        return TransientSourceError(f"{call}: undecodable body ({name})", kind="undecodable")
    if isinstance(error, httpx.TransportError) and not isinstance(
        error, httpx.UnsupportedProtocol | httpx.LocalProtocolError
    ):
        return TransientSourceError(f"{call}: transport error ({name})", kind="network")
    return FatalSourceError(f"{call}: request failed ({name})", kind="request")


def _log_retry(call: _Call, state: RetryCallState, max_attempts: int, kind: str) -> None:
    log.warning(
        "API request failed, retrying: account=%s mode=%s window=%s ini=%s "
        "attempt=%d/%d kind=%s wait=%.2fs",
        call.username,
        call.mode,
        call.window,
        "-" if call.ini is None else call.ini,
        state.attempt_number,
        max_attempts,
        kind,
        state.upcoming_sleep,
    )


def _retry_after(state: RetryCallState) -> float | None:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None and outcome.failed else None
    return error.retry_after if isinstance(error, TransientSourceError) else None

"""Each of the three secrecy layers on its own, the other two switched off, so none can
regress unseen behind the others: the masking transport, the filter on the httpx loggers,
the filter on the root handler."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from etl.api.client import CdrApiClient, Credentials, RetryPolicy
from etl.logs import setup_logging
from etl.redact import RedactingFilter

SECRET = "s3cr3t-Pa55word-71"


class Capture(logging.Handler):
    """A plain handler (no filter of its own): every formatted message it is given."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """No secret registered with any RedactingFilter: the filters scrub nothing."""
    monkeypatch.setattr(RedactingFilter, "_secrets", frozenset())
    monkeypatch.setattr(RedactingFilter, "register", classmethod(lambda cls, secret: None))


@pytest.fixture
def captured() -> Iterator[Capture]:
    handler = Capture()
    root = logging.getLogger()
    saved = root.level, logging.getLogger("httpx").level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logging.getLogger("httpx").setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        logging.getLogger("httpx").setLevel(saved[1])


@pytest.mark.usefixtures("no_secrets")
def test_the_transport_alone_keeps_the_password_off_httpx_logs_and_the_request(
    captured: Capture,
) -> None:
    """Filters scrubbing nothing: the password still reaches the wire, while httpx's own
    request log line shows only the mask."""
    wire: list[str] = []

    def provider(request: httpx.Request) -> httpx.Response:
        wire.append(str(request.url))
        return httpx.Response(200, json=[])

    client = CdrApiClient("https://cdr.example.test/getCdrs.php", sleep=lambda _: None,
                          retry=RetryPolicy(max_attempts=1),
                          transport=httpx.MockTransport(provider))  # fmt: skip
    with client:
        client.fetch_page(Credentials("8569841", SECRET), datetime(2024, 6, 1),
                          datetime(2024, 6, 1, 1), ini=0, cant=10)  # fmt: skip
    assert wire
    assert SECRET in wire[0]  # the password does reach the provider
    httpx_lines = [line for line in captured.lines if "HTTP Request" in line]
    assert httpx_lines  # httpx did log the request
    assert not [line for line in captured.lines if SECRET in line]


def test_the_httpx_logger_filter_alone_scrubs_httpx_records(
    captured: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No handler filter, no transport: a record made on the httpx logger after a client
    exists is scrubbed of a registered password by the logger's own filter."""
    monkeypatch.setattr(RedactingFilter, "_secrets", RedactingFilter._secrets)
    CdrApiClient("https://cdr.example.test/getCdrs.php").close()  # installs the filter
    RedactingFilter.register(SECRET)
    logging.getLogger("httpx").info("HTTP Request: GET https://x/?password=%s", SECRET)
    assert captured.lines
    assert not [line for line in captured.lines if SECRET in line]


def test_the_root_handler_filter_alone_scrubs_any_logger(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No transport, no logger filter: setup_logging's handler scrubs a registered password
    from a record of any other logger."""
    monkeypatch.setattr(RedactingFilter, "_secrets", RedactingFilter._secrets)
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        setup_logging("DEBUG")
        RedactingFilter.register(SECRET)
        logging.getLogger("somewhere.else").warning("connecting with %s", SECRET)
        out = capsys.readouterr()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    assert "connecting with" in out.err
    assert SECRET not in out.err + out.out

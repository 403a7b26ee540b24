"""Redaction: secrets out of text, log records and URLs."""

from __future__ import annotations

import logging
import sys

import pytest

from etl.redact import MASK, RedactingFilter, redact, redact_url

SECRET = "98765432109"


def test_redact_replaces_every_occurrence_and_encoded_forms() -> None:
    """Each secret, plain or URL-encoded, is replaced wherever it occurs."""
    text = f"a={SECRET} b={SECRET} c=p%40ss%2Fx d=p%40ss/x"
    out = redact(text, [SECRET, "p@ss/x", ""])
    assert SECRET not in out
    assert "p%40ss" not in out
    assert out.count(MASK) == 4


def test_redact_prefers_the_longest_secret() -> None:
    """Overlapping secrets leave no partial remainder."""
    assert redact("xx1234567yy", ["1234", "1234567"]) == f"xx{MASK}yy"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"https://callmyway.com/getCdrs.php?username=8569841&password={SECRET}&format=json",
            "https://callmyway.com/getCdrs.php?username=8569841&password=***&format=json",
        ),
        (f"http://h/x?password={SECRET}", "http://h/x?password=***"),
        (f"http://h/x?a=1&PASSWORD={SECRET}#frag", "http://h/x?a=1&PASSWORD=***#frag"),
        (f"https://user:{SECRET}@h/x", "https://user:***@h/x"),
        ("https://h/x?username=1", "https://h/x?username=1"),
    ],
)
def test_redact_url_masks_the_password(url: str, expected: str) -> None:
    """redact_url masks the password query value and a userinfo password, nothing else."""
    assert redact_url(url) == expected


@pytest.fixture
def secret_registered() -> None:
    RedactingFilter.register(SECRET)


@pytest.mark.usefixtures("secret_registered")
def test_filter_scrubs_message_args_extras_and_exception(caplog: pytest.LogCaptureFixture) -> None:
    """A record's message, %-args, extra fields and exception text lose the secret."""
    logger = logging.getLogger("test_redact.scrub")
    RedactingFilter.install(logger)
    caplog.set_level(logging.DEBUG, logger="test_redact.scrub")
    logger.info("plain %s", SECRET)
    logger.info(f"inline {SECRET}")
    logger.info("dict %(p)s", {"p": SECRET})
    logger.info("extra", extra={"url": f"https://h/?password={SECRET}"})
    try:
        raise ValueError(f"boom {SECRET}")
    except ValueError:
        logger.exception("failed")
    assert SECRET not in caplog.text
    for rec in caplog.records:
        assert SECRET not in rec.getMessage()
        assert SECRET not in str(vars(rec).get("url", ""))
        assert SECRET not in (rec.exc_text or "")
    assert caplog.text.count(MASK) == 4


@pytest.mark.usefixtures("secret_registered")
def test_filter_on_a_handler_sees_every_logger() -> None:
    """Installed on a handler, the filter scrubs records of any logger before they are written."""
    seen: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(self.format(record))

    handler = ListHandler()
    RedactingFilter.install(handler)
    RedactingFilter.install(handler)  # idempotent
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    logger = logging.getLogger("test_redact.handler.child")
    logger.addHandler(handler)
    try:
        logger.warning("GET https://h/?password=%s", SECRET)
    finally:
        logger.removeHandler(handler)
    assert seen == ["GET https://h/?password=***"]


@pytest.mark.usefixtures("secret_registered")
def test_filter_survives_a_broken_format() -> None:
    """A record whose %-format is broken still gets its arguments scrubbed and is kept."""
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "%s %s", (SECRET,), None)
    assert RedactingFilter().filter(rec) is True
    assert rec.args == (MASK,)


def test_register_ignores_empty_and_repeats() -> None:
    """An empty secret is never registered (it would mask everything); repeats are no-ops."""
    before = RedactingFilter.secrets()
    RedactingFilter.register("")
    assert RedactingFilter.secrets() == before
    RedactingFilter.register(SECRET)
    RedactingFilter.register(SECRET)
    assert SECRET in RedactingFilter.secrets()


def test_filter_with_exc_info_keeps_the_traceback_text() -> None:
    """The exception text is formatted once, scrubbed, and kept for the handlers."""
    RedactingFilter.register(SECRET)
    try:
        raise RuntimeError(SECRET)
    except RuntimeError:
        info = sys.exc_info()
    rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "m", None, info)
    RedactingFilter().filter(rec)
    assert rec.exc_text is not None
    assert "RuntimeError: ***" in rec.exc_text

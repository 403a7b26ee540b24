"""Keeping secrets out of text: log records, messages, URLs.

The account password travels in the query string of every request, so any text that may
hold a URL may hold the password. Three tools, used together (defence in depth):

- `redact(text, secrets)` replaces each secret, and its URL-encoded forms, by `***`;
- `RedactingFilter` is a `logging.Filter` over a process-wide set of secrets
  (`RedactingFilter.register(secret)`): it scrubs the formatted message, the arguments,
  the exception and stack text and any extra string attribute of each record it sees.
  The CLI installs it on the root handlers; the API client installs it on the `httpx` and
  `httpcore` loggers and registers every password it is given;
- `redact_url(url)` masks the `password` query value (and a userinfo password).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import ClassVar
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "RedactingFilter", "redact", "redact_url"]

MASK = "***"

_PASSWORD_PARAM = re.compile(r"(?i)([?&;]password=)[^&#;\s]*")
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/@\s:]*:)[^/@\s]*@")


_QUERY_SAFE = "!$'()*,;:/?@[]"  # what URL libraries (httpx among them) may leave as is


def _forms(secret: str) -> set[str]:
    """The secret and the ways a URL may spell it (percent-encoded more or less eagerly)."""
    forms = {secret}
    for safe in ("", "/", _QUERY_SAFE):
        forms.add(quote(secret, safe=safe))
        forms.add(quote_plus(secret, safe=safe))
    return forms


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every (non-empty) secret and its URL-encoded forms replaced by `***`."""
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms |= _forms(secret)
    for form in sorted(forms, key=len, reverse=True):  # longest first: no partial leftovers
        if form in text:
            text = text.replace(form, MASK)
    return text


def redact_url(url: str) -> str:
    """`url` with the `password` query value and any userinfo password replaced by `***`."""
    url = _PASSWORD_PARAM.sub(lambda m: m.group(1) + MASK, url)
    return _USERINFO.sub(lambda m: m.group(1) + MASK + "@", url)


class RedactingFilter(logging.Filter):
    """Scrubs every registered secret from each log record; never drops a record.

    Attach it to handlers (it then sees records of every logger) or to a logger (only
    records created on that very logger: `httpcore.http11` is not `httpcore`).
    """

    _secrets: ClassVar[frozenset[str]] = frozenset()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def register(cls, secret: str) -> None:
        """Add a secret (and its URL-encoded forms) to the process-wide set."""
        if not secret:
            return
        forms = _forms(secret)
        if forms <= cls._secrets:
            return
        with cls._lock:  # copy-on-write: filters read the set without the lock
            cls._secrets = cls._secrets | forms

    @classmethod
    def secrets(cls) -> frozenset[str]:
        """The registered secrets (for `redact`)."""
        return cls._secrets

    @classmethod
    def install(cls, logger: logging.Logger | logging.Handler) -> None:
        """Attach one instance to a logger or handler, unless one is already there."""
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(cls())

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets
        if not secrets:
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        try:
            message = record.getMessage()
        except Exception:  # a broken format: keep the raw parts, scrubbed one by one
            message = None
        if message is not None and any(s in message for s in secrets):
            record.msg = redact(message, secrets)
            record.args = None
        elif message is None and record.args:
            record.args = tuple(redact(str(a), secrets) for a in _as_tuple(record.args))
        for key, value in vars(record).items():
            if isinstance(value, str) and any(s in value for s in secrets):
                setattr(record, key, redact(value, secrets))
        return True


def _as_tuple(args: object) -> tuple[object, ...]:
    if isinstance(args, tuple):
        return args
    if isinstance(args, dict):
        return tuple(args.values())
    return (args,)

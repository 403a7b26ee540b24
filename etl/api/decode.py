"""Pure: a response body of getCdrs.php -> its records, or the error it really is.

`decode(body, content_type, fmt)` returns a list of raw records (dicts, values as sent) or
raises a `SourceError` subclass; it never mistakes an error for "no data".

JSON (orjson)
    A bare list; `{"cdrs"|"data"|"records": [...]}`; a single object with a `callid` is one
    record; `null` and an envelope whose list is `null` are no rows. An object with a truthy
    `error`, a `status` of error/fail/ko, `success: false`, or only a `message`/`msg` is a
    message (below). Invalid JSON that starts like JSON (`[`, `{`) is a truncated body; a
    JSON string is a message.
CSV
    A header row (BOM tolerated), the delimiter sniffed from the header line (`,`, `;` or
    tab), empty cells kept as `""` (normalization reads them as no value). The header must
    name a `callid` column, or the body is not a CDR table but a message. A last row with
    fewer cells than the header, or an open quote at the end, is a truncated body; another
    row whose cell count differs becomes a malformed record (rejected downstream, counted).
HTML
    The first `<table>` whose header (`<th>` cells, else the first `<tr>`) names `callid`;
    entities unescaped, cell text kept as is. A table with only its header is no rows. A
    table not closed before the end is a truncated body. A page without such a table is
    a message.

A body that says exactly "no records" (no records/data/rows found, no hay registros,
sin datos, ...), as plain text, as a lone JSON `message`, or as the whole message of an
error object (`{"error": "No records found"}`), is no rows: it is not an error.

Messages (an HTTP 200 whose body is not data; in csv/html also a table whose only column
is `error`/`message`), classified in this order:
    0. it is the server's own machinery failing (SQLSTATE, PDOException, mysql, "Fatal
       error", "Access denied for user ... using password") -> `TransientSourceError`:
       those words would otherwise read as a credentials problem, and they are not ours;
    1. it speaks of credentials (username, password, credential, login, auth, forbidden,
       usuario, contraseña, clave, endpoint, ...) -> `AuthError`, never retried;
    2. it reads as a passing server trouble (busy, try again, timeout, temporarily,
       unavailable, maintenance, overloaded, too many, gateway, connection, database,
       intente, ocupado, conexión, base de datos) or it is an HTML page that holds no CDR
       table (a proxy or server error page served as 200) -> `TransientSourceError`;
    3. it reads as an error message (error, invalid, incorrect, denied, missing, bad, wrong,
       not allowed, inválid, fecha, parámetro, ...) -> `FatalSourceError`: a retry will not
       fix a refused request;
    4. anything else is an undecodable body -> `TransientSourceError` (retried, as DESIGN
       says of undecodable bodies; after the last attempt the run fails anyway).

An empty (or whitespace-only) body decodes to no rows. Whether an empty body may be
trusted is the transport's question, answered by the client: only a body whose framing
(Content-Length or chunked encoding) proved it complete.

Each error carries its `kind` (etl/errors.py): "truncated", "undecodable", "error_200"
or "auth". Messages quote at most 200 characters of the body;
the client redacts them before they leave it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from html.parser import HTMLParser
from typing import Any, Literal

import orjson

from etl.errors import (
    CredentialsMessage,
    ErrorMessage,
    PassingTrouble,
    SourceError,
    TruncatedBody,
    UndecodableBody,
)
from etl.records import MALFORMED_KEY

__all__ = ["BodyFormat", "classify_message", "decode"]

BodyFormat = Literal["json", "csv", "html"]


_ENVELOPE_KEYS = ("cdrs", "data", "records")
_MESSAGE_KEYS = ("error", "message", "msg", "mensaje", "detail", "description")
_MESSAGE_COLUMNS = frozenset(("error", "message", "msg", "mensaje", "status", "detail"))
_ERROR_STATUS = frozenset(("error", "fail", "failed", "failure", "ko", "err"))

_SERVER_FAULT = re.compile(  # the server's own machinery failing (its database, PHP)
    r"sqlstate|pdoexception|mysqli?_|\bmysql|uncaught|stack\s+trace|fatal\s+error|"
    r"access\s+denied\s+for\s+user|using\s+password:|parse\s+error|internal\s+server",
    re.IGNORECASE,
)
_CREDENTIALS = re.compile(
    r"user\s*name|usuario|pass\s*word|passwd|contrase(?:ñ|n)a|\bclave|credential|"
    r"log\s*-?in\b|\bauth|unauthori[sz]ed|forbidden|acceso\s+denegado|access\s+denied|"
    r"\bendpoint",
    re.IGNORECASE,
)
_PASSING = re.compile(
    r"busy|try\s+again|retry|time\s*-?\s*d?\s*out|temporar|unavailable|maintenance|"
    r"overload|too\s+many|rate\s+limit|gateway|intente|ocupado|mantenimiento|"
    r"no\s+disponible|deadlock|lock\s+wait|gone\s+away|connection|conexi[oó]n|database|"
    r"base\s+de\s+datos",
    re.IGNORECASE,
)
_ERRORISH = re.compile(
    r"error|invalid|inv[aá]lid|incorrect|denied|missing|\bbad\b|wrong|not\s+allowed|"
    r"not\s+found|required|fecha|date|par[aá]metro|parameter|faltan?|no\s+existe|"
    r"exception|fatal|warning",
    re.IGNORECASE,
)


def _snippet(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= 200 else one_line[:197] + "..."


def classify_message(text: str, *, html_page: bool = False) -> SourceError:
    """The error a 200 body that is not data stands for (the order of the module doc)."""
    shown = _snippet(text) or "(no text)"
    if _SERVER_FAULT.search(text):
        return PassingTrouble(f"server failure in a 200 answer: {shown!r}")
    if _CREDENTIALS.search(text):
        return CredentialsMessage(f"credentials refused: {shown!r}")
    if _PASSING.search(text):
        return PassingTrouble(f"server trouble in a 200 answer: {shown!r}")
    if html_page:
        return PassingTrouble(f"an HTML page without a CDR table: {shown!r}")
    if _ERRORISH.search(text):
        return ErrorMessage(f"error message in a 200 answer: {shown!r}")
    return UndecodableBody(f"undecodable body: {shown!r}")


def decode(body: bytes, content_type: str | None, fmt: BodyFormat) -> list[dict[str, Any]]:
    """The records of one response body, or raise the SourceError it stands for."""
    stripped = body.strip()
    if stripped.startswith(_BOM):
        stripped = stripped[len(_BOM) :].strip()
    if not stripped:
        return []
    first = stripped[:1]
    if first in (b"[", b"{") or (fmt == "json" and stripped[:1] == b'"'):
        return _decode_json(stripped)
    if fmt == "json":
        if stripped in (b"null", b"true", b"false"):
            return _decode_json(stripped)
        return _not_data(_text(stripped, content_type))
    text = _text(body, content_type).lstrip("\ufeff")
    if fmt == "html" or _looks_like_html(text):
        return _decode_html(text)
    return _decode_csv(text)


_BOM = b"\xef\xbb\xbf"
_NO_DATA = re.compile(
    r"\s*(?:no\s+(?:records?|data|rows?|cdrs?|results?|calls?)(?:\s+found)?|"
    r"no\s+hay\s+(?:registros|datos|cdrs|resultados|llamadas)|"
    r"sin\s+(?:registros|datos|resultados))\s*[.!]?\s*",
    re.IGNORECASE,
)


def _not_data(text: str) -> list[dict[str, Any]]:
    """A body that is not data: no rows if it says exactly that, else its error."""
    if _looks_like_html(text):
        raise classify_message(_HtmlText.of(text), html_page=True)
    if _NO_DATA.fullmatch(text):
        return []
    raise classify_message(text)


def _text(body: bytes, content_type: str | None) -> str:
    charset = "utf-8"
    if content_type:
        match = re.search(r"charset\s*=\s*\"?([\w.:-]+)", content_type, re.IGNORECASE)
        if match:
            charset = match.group(1)
    try:
        return body.decode(charset)
    except (LookupError, UnicodeDecodeError):
        pass
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("cp1252", errors="replace")


def _looks_like_html(text: str) -> bool:
    return text.lstrip()[:1] == "<"


# --- JSON ----------------------------------------------------------------------------


# orjson reads an integer beyond 64 bits as a lossy float (two long callids would merge) and
# refuses a number beyond a double (one such value would block its window forever): a body
# holding such a float, or one orjson refuses, is read again by the standard library, whose
# integers are exact. (A regular expression over the body cost four times orjson itself.)
_EXACT_FLOAT_LIMIT = 2.0**53


def _lossy(value: Any) -> bool:
    """A record holding a float too large to be an exact integer (orjson's reading of an
    integer beyond 64 bits)."""
    return isinstance(value, list) and any(
        type(field) is float and abs(field) >= _EXACT_FLOAT_LIMIT
        for record in value
        if type(record) is dict
        for field in record.values()
    )


def _finite_or_text(text: str) -> float | str:
    """A JSON number beyond a double (or NaN/Infinity) is kept as its text: jsonb holds no
    infinity, and the record is kept whole (normalization rejects it if it is typed)."""
    number = float(text)
    return number if math.isfinite(number) else text


def _exact_json(body: bytes) -> Any:
    return json.loads(body, parse_float=_finite_or_text, parse_constant=str)


def _decode_json(body: bytes) -> list[dict[str, Any]]:
    try:
        value = orjson.loads(body)
        if _lossy(value):
            value = _exact_json(body)
    except ValueError:  # orjson.JSONDecodeError and json.JSONDecodeError both are
        try:
            value = _exact_json(body)
        except (ValueError, RecursionError):
            if body[:1] in (b"[", b"{"):
                raise TruncatedBody(f"truncated or invalid JSON ({len(body)} bytes)") from None
            raise UndecodableBody(f"undecodable JSON ({len(body)} bytes)") from None
    return _records_of(value)


def _records_of(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, list):
        return [
            item if isinstance(item, dict) else {MALFORMED_KEY: "record is not an object"}
            for item in value
        ]
    if isinstance(value, str):
        return _not_data(value)
    if isinstance(value, dict):
        return _object_records(value)
    raise UndecodableBody(f"unexpected JSON value: {_snippet(repr(value))}")


def _object_records(value: dict[str, Any]) -> list[dict[str, Any]]:
    status = value.get("status")
    if (
        value.get("error") not in (None, False, "", 0, [], {})
        or (isinstance(status, str) and status.strip().lower() in _ERROR_STATUS)
        or value.get("success") is False
    ):
        message = _message_of(value)
        if _NO_DATA.fullmatch(message):  # {"error": "No records found"} is no rows
            return []
        raise classify_message(message)
    for key in _ENVELOPE_KEYS:
        if key in value:
            inner = value[key]
            if inner is None or isinstance(inner, list):
                return _records_of(inner)
            if isinstance(inner, dict) and "callid" in inner:
                return [inner]
            raise UndecodableBody(f"unexpected {key!r} in the JSON envelope")
    if "callid" in value:
        return [value]
    if any(key in value for key in _MESSAGE_KEYS):
        return _not_data(_message_of(value))
    keys = ", ".join(sorted(str(k) for k in value)[:10])
    raise UndecodableBody(f"unexpected JSON object with keys [{keys}]")


def _message_of(value: dict[str, Any]) -> str:
    parts = []
    for key in _MESSAGE_KEYS:
        part = value.get(key)
        if isinstance(part, str) and part.strip():
            parts.append(part)
        elif isinstance(part, dict | list):
            parts.append(orjson.dumps(part).decode())
    return " ".join(parts) or "error"


# --- CSV -----------------------------------------------------------------------------


def _decode_csv(text: str) -> list[dict[str, Any]]:
    header_line = text.lstrip().split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=header_line.count)
    try:
        rows = _csv_rows(text, delimiter, strict=True)
    except csv.Error as error:
        if "end of data" in str(error):  # an open quote at the end: the body was cut
            raise TruncatedBody("truncated CSV (an open quote at the end)") from None
        rows = _csv_rows(text, delimiter, strict=False)  # a stray quote: read it leniently
    header = [name.strip() for name in rows[0]] if rows else []
    if "callid" not in (name.lower() for name in header):
        return _not_data(text.strip())
    return _table_records(header, rows[1:], "CSV", complete=text.endswith(("\n", "\r")))


def _csv_rows(text: str, delimiter: str, *, strict: bool) -> list[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=strict)
    return [row for row in reader if row]


def _table_records(
    header: list[str], rows: list[list[str]], what: str, *, complete: bool
) -> list[dict[str, Any]]:
    width = len(header)
    records: list[dict[str, Any]] = []
    last = len(rows) - 1
    for index, row in enumerate(rows):
        if len(row) == width:
            records.append(dict(zip(header, row, strict=True)))
        elif index == last and len(row) < width and not complete:
            raise TruncatedBody(f"truncated {what} (the last row has {len(row)} of {width} cells)")
        else:
            records.append(
                {
                    MALFORMED_KEY: f"{what} row has {len(row)} cells, the header {width}",
                    "cells": row,
                }
            )
    return records


# --- HTML ----------------------------------------------------------------------------


class _HtmlTables(HTMLParser):
    """Collects the tables of a page: each a list of rows, each row a list of cells."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[tuple[list[list[str]], bool]] = []  # (rows, closed)
        self._rows: list[list[str]] | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._depth += 1
            if self._depth == 1:
                self._rows = []
        elif self._depth != 1 or self._rows is None:
            return
        elif tag == "tr":
            self._close_row()
            self._row = []
        elif tag in ("td", "th"):
            self._close_cell()
            if self._row is None:
                self._row = []
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            if self._depth == 1 and self._rows is not None:
                self._close_row()
                self.tables.append((self._rows, True))
                self._rows = None
            self._depth = max(0, self._depth - 1)
        elif self._depth != 1:
            return
        elif tag in ("td", "th"):
            self._close_cell()
        elif tag == "tr":
            self._close_row()

    def handle_data(self, data: str) -> None:
        if self._cell is not None and self._depth == 1:
            self._cell.append(data)

    def _close_cell(self) -> None:
        if self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
        self._cell = None

    def _close_row(self) -> None:
        self._close_cell()
        if self._row and self._rows is not None:  # a row without cells is layout, not data
            self._rows.append(self._row)
        self._row = None

    def finish(self) -> None:
        self.close()
        if self._rows is not None:  # a table still open at the end of the body
            self._close_row()
            self.tables.append((self._rows, False))
            self._rows = None


class _HtmlText(HTMLParser):
    """The visible text of a page (for classifying error pages)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)

    @classmethod
    def of(cls, page: str) -> str:
        parser = cls()
        parser.feed(page)
        parser.close()
        return " ".join(" ".join(parser.parts).split())


def _decode_html(text: str) -> list[dict[str, Any]]:
    parser = _HtmlTables()
    parser.feed(text)
    parser.finish()
    for rows, closed in parser.tables:
        if not rows:
            continue
        header = [cell.strip().lower() for cell in rows[0]]
        if header and set(header) <= _MESSAGE_COLUMNS:  # an error said as a table
            raise classify_message(" ".join(cell for row in rows[1:] for cell in row))
        if "callid" not in header:
            continue
        header = [cell.strip() for cell in rows[0]]
        if not closed:
            raise TruncatedBody("truncated HTML (the table is not closed)")
        return _table_records(header, rows[1:], "HTML", complete=True)
    if any(closed and not rows for rows, closed in parser.tables) and not _HtmlText.of(text):
        return []  # nothing but an empty table
    return _not_data(text.strip())

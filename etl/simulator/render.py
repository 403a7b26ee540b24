"""The three answer formats of getCdrs.php, built from rows already serialized as JSON.

- json: a bare JSON array (`text/plain`, as the manual says "plain text"), or, with the
  `envelope` option, the array under a `cdrs` or `data` key (API.md: clients guard for both);
- csv: a header row, then one line per row, comma separated, null and missing as empty;
- html: a simple `<table>` with a `<th>` header row and `<td>` cells, values escaped.

Fields come and go between records: the CSV and HTML header is the union of the page's
fields, the usual ones first in their usual order, then extras as first met.
An error (bad credentials, bad dates) is `{"error": "..."}` in json, and the same thing as
a one-column table (`error` header, one row) in csv and html.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from typing import Any, Literal

import orjson

from .data import FIELDS

Format = Literal["json", "csv", "html"]
Envelope = Literal["bare", "cdrs", "data"]
ENVELOPES: tuple[Envelope, ...] = ("bare", "cdrs", "data")
FORMATS: tuple[Format, ...] = ("json", "csv", "html")
CONTENT_TYPES: dict[Format, str] = {
    "json": "text/plain; charset=UTF-8",
    "csv": "text/csv; charset=UTF-8",
    "html": "text/html; charset=UTF-8",
}


def render(rows: Sequence[bytes], fmt: Format, envelope: Envelope = "bare") -> bytes:
    """The body of an answer holding these rows (each a serialized JSON object)."""
    if fmt == "json":
        array = b"[" + b",".join(rows) + b"]"
        return array if envelope == "bare" else b'{"%s":%s}' % (envelope.encode(), array)
    records: list[dict[str, Any]] = [orjson.loads(row) for row in rows]
    columns = _columns(records)
    table = [[_cell(record.get(name)) for name in columns] for record in records]
    return _csv(columns, table) if fmt == "csv" else _html(columns, table)


def render_error(message: str, fmt: Format) -> bytes:
    """An error answer, the way this format says it."""
    if fmt == "json":
        return orjson.dumps({"error": message})
    if fmt == "csv":
        return _csv(["error"], [[message]])
    return _html(["error"], [[message]])


def _columns(records: Sequence[dict[str, Any]]) -> list[str]:
    if not records:
        return list(FIELDS)
    seen: dict[str, None] = {}
    for record in records:
        seen.update(dict.fromkeys(record))
    usual = [name for name in FIELDS if name in seen]
    return usual + [name for name in seen if name not in FIELDS]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _csv(columns: Sequence[str], table: Sequence[Sequence[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(table)
    return out.getvalue().encode()


def _html(columns: Sequence[str], table: Sequence[Sequence[str]]) -> bytes:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>\n"
        for row in table
    )
    page = (
        '<html><head><meta charset="utf-8"><title>CDRs</title></head><body>\n'
        f'<table border="1">\n<tr>{head}</tr>\n{body}</table>\n</body></html>\n'
    )
    return page.encode()

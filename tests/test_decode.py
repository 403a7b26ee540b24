"""Decoding bodies: records from json/csv/html, and every error form recognised as an error."""

from __future__ import annotations

import csv
import html
import io
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.api.decode import decode
from etl.errors import (
    AuthError,
    CredentialsMessage,
    ErrorMessage,
    FatalSourceError,
    PassingTrouble,
    SourceError,
    TransientSourceError,
    TruncatedBody,
    UndecodableBody,
)
from etl.normalize import Cdr, normalize
from etl.records import MALFORMED_KEY

CR = ZoneInfo("America/Costa_Rica")

RECORDS: list[dict[str, Any]] = [
    {
        "callid": 1690000001,
        "original_callid": "",
        "ref_callid": 0,
        "type": "incoming",
        "ani": 50688887777,
        "dnis": "*34",
        "ani_user": 8569841,
        "dnis_user": 8569842,
        "name_endpoint_ani": "Recepción",
        "name_endpoint_dnis": "Soporte, Nivel 2",
        "detect_time": "2024-05-01 10:00:00",
        "connect_time": "2024-05-01 10:00:05",
        "disconnect_time": "2024-05-01 10:00:40",
        "duration": 35,
        "ring_time": -2,
        "end_reason": "OK",
        "route_name": None,
    },
    {
        "callid": "1690000002",
        "original_callid": "1690000001",
        "ref_callid": "0",
        "type": None,
        "ani": "50688887777",
        "dnis": "8569843",
        "ani_user": "8569841",
        "dnis_user": "8569843",
        "name_endpoint_ani": 'Ventas & Cobros <"VIP">',
        "name_endpoint_dnis": "línea\nnueva; otra",
        "detect_time": "2024-05-01 10:00:00",
        "connect_time": "",
        "disconnect_time": "0000-00-00 00:00:00",
        "duration": "0",
        "ring_time": "12",
        "end_reason": "NO_ANSWER",
        "route_name": "",
    },
]
COLUMNS = list(RECORDS[0])


def cell(value: Any) -> str:
    return "" if value is None else str(value)


def as_csv(records: list[dict[str, Any]], delimiter: str = ",", bom: bool = False) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for record in records:
        writer.writerow([cell(record.get(name)) for name in COLUMNS])
    return (("\ufeff" if bom else "") + out.getvalue()).encode()


def as_html(records: list[dict[str, Any]], header_tag: str = "th") -> bytes:
    head = "".join(f"<{header_tag}>{html.escape(c)}</{header_tag}>" for c in COLUMNS)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell(r.get(c)))}</td>" for c in COLUMNS) + "</tr>\n"
        for r in records
    )
    return (
        "<!DOCTYPE html><html><head><title>CDRs</title></head><body>\n"
        f'<table border="1">\n<tr>{head}</tr>\n{rows}</table>\n</body></html>\n'
    ).encode()


def raises(body: bytes, fmt: str = "json", content_type: str | None = None) -> SourceError:
    with pytest.raises(SourceError) as caught:
        decode(body, content_type, fmt)  # type: ignore[arg-type]
    return caught.value


# --- JSON ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        orjson.dumps(RECORDS),
        orjson.dumps({"cdrs": RECORDS}),
        orjson.dumps({"data": RECORDS, "status": "ok"}),
        orjson.dumps({"records": RECORDS, "error": False}),
        b"\xef\xbb\xbf  " + orjson.dumps(RECORDS) + b"\n",
    ],
)
def test_json_envelopes_give_the_records(body: bytes) -> None:
    """A bare list and the cdrs/data/records envelopes all give the records as sent."""
    assert decode(body, "application/json", "json") == RECORDS


@pytest.mark.parametrize(
    "body", [b"", b"  \r\n", b"\xef\xbb\xbf", b"[]", b"null", b'{"data": []}', b'{"cdrs": null}']
)
def test_json_empty_answers_are_no_rows(body: bytes) -> None:
    """Empty bodies, [] , null and empty envelopes are no rows."""
    assert decode(body, None, "json") == []


def test_json_single_object_and_non_objects() -> None:
    """A lone CDR object is one record; a non-object list item becomes a malformed record."""
    assert decode(b'{"callid": "7"}', None, "json") == [{"callid": "7"}]
    records = decode(b'[{"callid": "7"}, 5, [1]]', None, "json")
    assert records[0] == {"callid": "7"}
    assert all(MALFORMED_KEY in r for r in records[1:])
    assert len(records) == 3  # the page length stays true: paging counts on it


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b'{"error": "Invalid username or password"}', CredentialsMessage),
        (b'{"error": "Usuario o contrase\xc3\xb1a incorrectos"}', CredentialsMessage),
        (b'"Invalid password"', CredentialsMessage),
        (b'{"error": "Invalid date format, expected yyyy-mm-dd HH:ii:ss"}', ErrorMessage),
        (b'{"error": "Invalid ini or cant"}', ErrorMessage),
        (b'{"error": true}', ErrorMessage),
        (b'{"success": false}', ErrorMessage),
        (b'{"status": "error", "message": "Database busy, try again"}', PassingTrouble),
        (b'{"status": "ERROR"}', ErrorMessage),
        (b'{"message": "Missing parameter dateStart"}', ErrorMessage),
        (b'{"foo": 1}', UndecodableBody),
        (b'{"data": "oops"}', UndecodableBody),
        (b"true", UndecodableBody),
        (b"42", UndecodableBody),
    ],
)
def test_json_error_forms_are_errors(body: bytes, kind: type[SourceError]) -> None:
    """Every JSON error form raises, classified: credentials, refusals, server trouble, junk."""
    assert type(raises(body)) is kind


@pytest.mark.parametrize("message", ["No records found", "no data", "No hay registros."])
def test_a_message_saying_exactly_no_records_is_no_rows(message: str) -> None:
    """A lone message that says exactly "no records" is no rows, as text, JSON message or
    the whole message of an error object; an error saying more is still an error."""
    assert decode(orjson.dumps({"message": message}), None, "json") == []
    assert decode(message.encode(), None, "json") == []
    assert decode(orjson.dumps({"error": message}), None, "json") == []
    assert decode(orjson.dumps({"status": "error", "message": message}), None, "json") == []
    assert type(raises(orjson.dumps({"error": f"{message}: invalid date"}))) is ErrorMessage


@pytest.mark.parametrize(
    "body",
    [
        orjson.dumps(RECORDS)[:-1],
        orjson.dumps(RECORDS)[: len(orjson.dumps(RECORDS)) // 2],
        orjson.dumps({"data": RECORDS})[:-3],
        b"[",
        b'{"cdrs": [',
    ],
)
def test_truncated_json_is_transient(body: bytes) -> None:
    """A JSON body cut anywhere is a transient 'truncated' error, never fewer rows."""
    error = raises(body)
    assert isinstance(error, TruncatedBody)
    assert isinstance(error, TransientSourceError)
    assert error.kind == "truncated"


# --- plain text and HTML pages on a 200 -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Invalid username", AuthError),
        ("Error: Invalid password", AuthError),
        ("Login failed", AuthError),
        ("Usuario inválido", AuthError),
        ("Clave incorrecta", AuthError),
        ("Error: database busy", TransientSourceError),
        ("Error: Too many connections", TransientSourceError),
        ("Error de conexión con la base de datos", TransientSourceError),
        ("Service temporarily unavailable, try again later", TransientSourceError),
        ("Access denied for user 'root'@'localhost' (using password: YES)", TransientSourceError),
        ("Error: fecha inválida", FatalSourceError),
        ("Error: bad request", FatalSourceError),
        ("%PDF-1.4 \x01\x02", TransientSourceError),
    ],
)
def test_plain_text_on_200_is_classified(text: str, kind: type[SourceError]) -> None:
    """Text instead of JSON: credentials -> auth, server trouble -> transient, refusals -> fatal."""
    for fmt in ("json", "csv", "html"):
        error = raises(text.encode(), fmt)
        assert isinstance(error, kind), (fmt, error)
        if kind is FatalSourceError:
            assert not isinstance(error, AuthError)


def test_an_html_error_page_when_json_was_asked_is_transient() -> None:
    """A server/proxy error page served as 200 is passing trouble, counted as error_200."""
    page = (
        b"<!DOCTYPE html>\n<html><head><title>Error</title></head><body>\n"
        b"<h1>Fatal error</h1>\n<p><b>Fatal error</b>: Uncaught PDOException: SQLSTATE[HY000] "
        b"[2002] Connection refused in /var/www/html/getCdrs.php:42</p>\n</body></html>\n"
    )
    for fmt in ("json", "csv", "html"):
        error = raises(page, fmt, "text/html")
        assert isinstance(error, PassingTrouble)
        assert error.kind == "error_200"
    assert isinstance(raises(b"<html><body>Something happened</body></html>"), PassingTrouble)
    assert isinstance(raises(b"<html><body>Please log in</body></html>"), AuthError)


def test_error_messages_quote_the_body_briefly() -> None:
    """An error quotes at most 200 characters of the body, on one line."""
    error = raises(("Error: bad request " + "x" * 500 + "\nmore").encode())
    assert len(str(error)) < 260
    assert "\n" not in str(error)


# --- CSV ------------------------------------------------------------------------------------------


def strings(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{k: cell(v) for k, v in r.items()} for r in records]


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
@pytest.mark.parametrize("bom", [False, True])
def test_csv_gives_the_records_as_strings(delimiter: str, bom: bool) -> None:
    """CSV with any of the three delimiters, with or without BOM, gives the records as text."""
    body = as_csv(RECORDS, delimiter, bom)
    assert decode(body, "text/csv; charset=UTF-8", "csv") == strings(RECORDS)


def test_csv_header_only_is_no_rows() -> None:
    """A header and no rows is an empty result."""
    assert decode(as_csv([]), "text/csv", "csv") == []


def test_csv_error_table_is_an_error() -> None:
    """A one-column 'error' CSV is the error it holds, not an empty result."""
    assert isinstance(raises(b"error\nInvalid username or password\n", "csv"), AuthError)
    error = raises(b'error\n"Invalid date format, expected yyyy-mm-dd HH:ii:ss"\n', "csv")
    assert isinstance(error, ErrorMessage)


def test_csv_truncated_is_transient() -> None:
    """A CSV cut inside a quoted cell or inside its last row is a truncated body."""
    body = as_csv(RECORDS)
    cut_in_quote = body[: body.index(b"Soporte") + 3]
    assert isinstance(raises(cut_in_quote, "csv"), TruncatedBody)
    cut_in_row = body[: body.rindex(b"NO_ANSWER")]
    assert isinstance(raises(cut_in_row, "csv"), TruncatedBody)


def test_csv_odd_row_in_the_middle_is_a_malformed_record() -> None:
    """A middle row with the wrong cell count is kept as a malformed record (a reject later)."""
    lines = as_csv(RECORDS).decode().split("\r\n")
    body = "\r\n".join([lines[0], "1,2,3", *lines[1:]]).encode()
    records = decode(body, None, "csv")
    assert len(records) == 3
    assert records[0][MALFORMED_KEY] == "CSV row has 3 cells, the header 17"
    assert records[1:] == strings(RECORDS)[:1] + strings(RECORDS)[1:]


def test_csv_charsets() -> None:
    """A declared charset is honoured; undeclared non-UTF-8 falls back to cp1252."""
    body = "callid;name_endpoint_ani\n1;Recepción\n".encode("latin-1")
    expected = [{"callid": "1", "name_endpoint_ani": "Recepción"}]
    assert decode(body, "text/csv; charset=ISO-8859-1", "csv") == expected
    assert decode(body, "text/csv", "csv") == expected


# --- HTML -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("header_tag", ["th", "td"])
def test_html_table_gives_the_records_unescaped(header_tag: str) -> None:
    """A table with a th (or a plain first-row) header gives the records, entities unescaped."""
    assert decode(as_html(RECORDS, header_tag), "text/html", "html") == strings(RECORDS)


def test_html_tags_inside_cells_and_other_tables() -> None:
    """Markup in cells and empty rows are dropped; a table without callid is skipped."""
    page = (
        b"<html><body><table><tr><th>Report</th></tr><tr><td>May</td></tr></table>"
        b"<table><thead><tr><th>callid</th><th>ani</th></tr></thead><tbody>"
        b"<tr></tr><tr><td><b>7</b></td><td>50&amp;6<br>x</td></tr></tbody></table></body></html>"
    )
    assert decode(page, None, "html") == [{"callid": "7", "ani": "50&6\nx"}]


def test_html_empty_tables_are_no_rows() -> None:
    """A header-only CDR table, or a bare empty table, is an empty result."""
    assert decode(as_html([]), None, "html") == []
    assert decode(b"<table></table>", None, "html") == []
    assert decode(b"<table>\n</table>\n", None, "html") == []


def test_html_without_a_table_is_an_error() -> None:
    """A page with no table at all is an error, never "no rows"."""
    assert isinstance(raises(b"<html><body><p>Hello</p></body></html>", "html"), PassingTrouble)
    assert isinstance(
        raises(b"<html><body><table></table>No data?</body></html>", "html"), SourceError
    )


def test_html_truncated_is_transient() -> None:
    """A table not closed before the body ends is a truncated body."""
    body = as_html(RECORDS)
    assert isinstance(raises(body[: body.index(b"</table>")], "html"), TruncatedBody)


def test_html_error_table_is_the_error_it_holds() -> None:
    """A one-column 'error' table is classified by its text, like the JSON error object."""
    table = "<table><tr><th>error</th></tr><tr><td>{}</td></tr></table>"
    auth = table.format("Invalid username or password").encode()
    assert isinstance(raises(auth, "html"), CredentialsMessage)
    bad = table.format("Invalid ini or cant").encode()
    assert isinstance(raises(bad, "html"), ErrorMessage)


# --- across formats -------------------------------------------------------------------------------


def test_json_csv_and_html_normalize_to_identical_cdrs() -> None:
    """The same records served as json (numbers), csv and html give identical Cdrs and hashes."""
    decoded = {
        "json": decode(orjson.dumps(RECORDS), "text/plain", "json"),
        "csv": decode(as_csv(RECORDS), "text/csv", "csv"),
        "html": decode(as_html(RECORDS), "text/html", "html"),
    }
    typed: dict[str, list[Cdr]] = {}
    for fmt, records in decoded.items():
        results = [normalize(r, CR) for r in records]
        typed[fmt] = [c for c in results if isinstance(c, Cdr)]
        assert len(typed[fmt]) == len(RECORDS)
    without_raw = {fmt: [c._replace(raw={}) for c in cdrs] for fmt, cdrs in typed.items()}
    assert without_raw["json"] == without_raw["csv"] == without_raw["html"]
    assert len({c.content_hash for c in without_raw["json"]}) == 2


def test_a_field_missing_in_json_is_an_empty_cell_in_csv_and_hashes_alike() -> None:
    """A field absent in JSON and an empty CSV cell (union columns) are equal content."""
    sparse = [{"callid": "1", "codec": "PCMU"}, {"callid": "2", "hangup_side": "caller"}]
    body = b"callid,codec,hangup_side\n1,PCMU,\n2,,caller\n"
    from_json = [normalize(r, CR) for r in decode(orjson.dumps(sparse), None, "json")]
    from_csv = [normalize(r, CR) for r in decode(body, None, "csv")]
    assert [c.content_hash for c in from_json if isinstance(c, Cdr)] == [
        c.content_hash for c in from_csv if isinstance(c, Cdr)
    ]


# --- robustness -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
    st.sampled_from(["json", "csv", "html"]),
)
def test_decode_raises_only_source_errors(body: bytes, fmt: str) -> None:
    """Whatever the body, decode returns records or raises a SourceError, nothing else."""
    failure: SourceError | None = None
    records: list[dict[str, object]] = []
    try:
        records = decode(body, None, fmt)  # type: ignore[arg-type]
    except SourceError as error:
        failure = error
    if failure is not None:
        assert failure.kind in ("truncated", "undecodable", "error_200", "auth")
    assert all(isinstance(r, dict) for r in records)


def test_integers_beyond_64_bits_stay_exact() -> None:
    """Two callids that differ only past the 17th digit stay two callids, digit for digit."""
    body = (
        b'[{"callid": 123456789012345678901234567890}, {"callid": 123456789012345678901234567891}]'
    )
    records = decode(body, "application/json", "json")
    assert [str(r["callid"]) for r in records] == [
        "123456789012345678901234567890",
        "123456789012345678901234567891",
    ]


def test_a_number_beyond_a_double_does_not_block_the_page() -> None:
    """A value like 1e400 is kept as its text instead of making the page undecodable (jsonb
    could not hold an infinity)."""
    records = decode(b'[{"callid": "7", "duration": 1e400}]', "application/json", "json")
    assert records == [{"callid": "7", "duration": "1e400"}]

"""Pure: one raw CDR as the API sent it -> a typed `Cdr` (times in UTC) or a `Reject`.

No I/O, and `normalize` never raises: a record that cannot be typed becomes a `Reject`
with a one-line reason naming the field, and the run stores it and goes on.

No-value tokens
    `None`, and any string that, stripped of surrounding whitespace, is empty, `null` or
    `none` in any letter case (`NULL`, `None`, ...) or the MySQL zero date
    (`0000-00-00`, `0000-00-00 00:00:00`, also with `T` and zero fractional seconds)
    means "no value" -> `None`, in every field. So a whitespace-only string is no value.
    Any other text is kept exactly as the API sent it, surrounding whitespace included
    (`ref_callid` `"0"` stays `"0"`).

Text fields
    Numbers become their decimal text (`8569841` -> `"8569841"`, an integral float `5.0`
    -> `"5"`, another float its shortest repr); booleans `"true"`/`"false"`; a nested
    object or list its compact JSON text. A text containing NUL is rejected (PostgreSQL
    text cannot hold it). A `callid` that is missing, no value, or not a scalar is rejected.

Integer fields (`duration`, `ring_time`)
    From an int, an integral float, or a string of ASCII digits with an optional sign,
    surrounding whitespace and an all-zero fraction (`" 35 "`, `"-3"`, `"35.0"`). Negative
    values are kept (a negative `ring_time` is what the API says). Anything else, a
    boolean included, and any value outside PostgreSQL's `integer` range is rejected.

Time fields
    `YYYY-MM-DD HH:MM:SS` (or with `T`, with fractional seconds, surrounding spaces) is
    naive wall-clock time of the provider in the account's zone, converted to UTC as
    `to_utc` does (the hot path caches each local hour's UTC offset, and hands any hour
    that a transition touches to `to_utc` itself). A string carrying its own offset (`Z`,
    `+01:00`) is taken at that offset. Anything else, or a time that overflows in UTC,
    is rejected.

DST rule (`to_utc`)
    A local time is read with fold=0, the zoneinfo default:
    - an ambiguous time (the repeated hour of a fall-back) is its FIRST occurrence, the one
      still at the summer offset (New York 2024-11-03 01:30 -> 05:30 UTC);
    - a nonexistent time (the skipped hour of a spring-forward) is read with the offset in
      force before the gap, i.e. it lands shifted forward by the gap (New York 2024-03-10
      02:30 -> 07:30 UTC, which is 03:30 EDT).

Content hash
    blake2b (16-byte digest, 32 hex chars) over the record's fields, sorted by key, each
    value canonicalised to the text it would have as a text field (so `35` and `"35"`,
    `5.0` and `"5"` hash the same, while `true` and `1` do not, nor `"35"` and `"35.0"`),
    and a field with no value (any no-value token) left out, as if absent: a CSV or HTML
    page has a column for every field of the page, so a record lacking a field in JSON
    has an empty cell for it there. The same record served as JSON (numbers) and as
    CSV/HTML (strings) therefore hashes the same, and the hash changes exactly when some
    field gains, loses or changes a value.

Whole-record rejects: a record holding a NUL character anywhere (PostgreSQL text and
jsonb refuse it) or text that is not valid unicode (lone surrogates) is rejected, so one
such record never fails a whole COPY; its Reject carries a storable copy of the record
(NUL spelled as the six characters `\\u0000`, a lone surrogate as U+FFFD), not the dict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import orjson

from etl.errors import RejectedRecord
from etl.records import MALFORMED_KEY

__all__ = [
    "INT_FIELDS",
    "TEXT_FIELDS",
    "TIME_FIELDS",
    "Cdr",
    "NormalizedPage",
    "Reject",
    "content_hash",
    "is_no_value",
    "normalize",
    "to_utc",
]


class Cdr(NamedTuple):
    """One call leg, typed. Field order is the COPY column order of the `cdrs` table."""

    callid: str
    original_callid: str | None
    ref_callid: str | None
    type: str | None
    ani: str | None
    dnis: str | None
    ani_user: str | None
    dnis_user: str | None
    name_endpoint_ani: str | None
    name_endpoint_dnis: str | None
    route_name: str | None
    end_reason: str | None
    duration: int | None
    ring_time: int | None
    detect_time: datetime | None
    connect_time: datetime | None
    disconnect_time: datetime | None
    raw: dict[str, Any]
    content_hash: str


class Reject(NamedTuple):
    """A record that cannot be normalized, with the reason, kept whole for the rejects table."""

    reason: str
    raw: dict[str, Any]
    callid: str | None


TEXT_FIELDS: tuple[str, ...] = (
    "original_callid",
    "ref_callid",
    "type",
    "ani",
    "dnis",
    "ani_user",
    "dnis_user",
    "name_endpoint_ani",
    "name_endpoint_dnis",
    "route_name",
    "end_reason",
)
INT_FIELDS: tuple[str, ...] = ("duration", "ring_time")
TIME_FIELDS: tuple[str, ...] = ("detect_time", "connect_time", "disconnect_time")


_INT_MIN = -(2**31)  # PostgreSQL `integer`: a value outside would fail the whole COPY
_INT_MAX = 2**31 - 1
_NO_VALUE_EXACT = frozenset(
    ("", "null", "NULL", "Null", "None", "none", "NONE", "0000-00-00 00:00:00", "0000-00-00")
)
# What str.strip() removes (str.isspace(); a test checks the list against Python's own).
_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# A string can be a no-value token only if it is empty or starts with one of these.
_SUSPECT_FIRST = frozenset("nN0" + _WHITESPACE)
_ZERO_DATE = re.compile(r"0000-00-00(?:[ T]00:00:00(?:\.0+)?)?")
_INT_TEXT = re.compile(r"\s*([+-]?[0-9]+)(?:\.0*)?\s*", re.ASCII)
_TIME_TEXT = re.compile(
    r"\s*([0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]+)?"
    r"(Z|[+-][0-9]{2}:?[0-9]{2})?\s*",
    re.ASCII,
)
_SORT_KEYS = orjson.OPT_SORT_KEYS
_SURROGATE = re.compile("[\ud800-\udfff]")


def is_no_value(text: str) -> bool:
    """True when `text` is one of the API's ways of saying "no value" (see the module doc)."""
    if text in _NO_VALUE_EXACT:
        return True
    stripped = text.strip()
    if not stripped:
        return True
    first = stripped[0]
    if first in "nN":
        return len(stripped) == 4 and stripped.lower() in ("null", "none")
    if first == "0":
        return len(stripped) >= 10 and _ZERO_DATE.fullmatch(stripped) is not None
    return False


# --- canonical values: shared by the content hash and the text fields ------------------


def _float_text(value: float) -> str:
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _canon(value: Any) -> Any:
    """A raw value -> its canonical form: text, None, or (nested) a dict/list of those."""
    kind = type(value)
    if kind is str:
        return None if is_no_value(value) else value
    if value is None:
        return None
    if kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is float:
        return _float_text(value)
    if isinstance(value, str):
        return None if is_no_value(value) else str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return _float_text(float(value))
    if isinstance(value, Mapping):
        return {str(k): _canon(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canon(v) for v in value]
    return repr(value)


def _canonical_record(raw: Mapping[Any, Any]) -> dict[Any, Any]:
    """The record's fields that have a value, canonical; a field without one is left out."""
    suspect = _SUSPECT_FIRST
    return {  # the hot loop: plain text and plain ints inline, the rest through _canon
        key: text
        for key, value in raw.items()
        if (
            text := value
            if (kind := type(value)) is str and value and value[0] not in suspect
            else str(value)
            if kind is int
            else None
            if value is None or value == ""
            else _canon(value)
        )
        is not None
    }


def _encode(canon: dict[Any, Any]) -> bytes | None:
    """Canonical JSON of a canonical record (sorted keys); None if it holds lone surrogates."""
    try:
        return orjson.dumps(canon, option=_SORT_KEYS)
    except TypeError:  # non-text keys, or text that is not valid unicode
        pass
    try:
        return orjson.dumps({str(k): v for k, v in canon.items()}, option=_SORT_KEYS)
    except TypeError:
        return None


def _blob(canon: dict[Any, Any]) -> bytes:
    blob = _encode(canon)
    if blob is None:  # lone surrogates: hash a lossless repr instead (deterministic)
        items = sorted(((str(k), v) for k, v in canon.items()), key=_first)
        blob = repr(items).encode("utf-8", "surrogatepass")
    return blob


def _first(pair: tuple[str, Any]) -> str:
    return pair[0]


def content_hash(raw: Mapping[str, Any]) -> str:
    """The 32-hex-char hash of a record's canonical content (see the module doc)."""
    return _hash_hex(_blob(_canonical_record(raw)))


def _text_of(canon: Any) -> str | None:
    if canon is None or type(canon) is str:
        return canon
    return orjson.dumps(canon, option=_SORT_KEYS).decode()


def _has_nul(canon: Any) -> bool:
    if isinstance(canon, str):
        return "\x00" in canon
    if isinstance(canon, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in canon.items())
    if isinstance(canon, list):
        return any(_has_nul(v) for v in canon)
    return False


# --- times ---------------------------------------------------------------------------


def to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """Provider wall-clock time -> aware UTC, by the DST rule of the module doc (fold=0).

    An aware `local` is simply converted.
    """
    if local.tzinfo is not None:
        return local.astimezone(UTC)
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC)


# zone -> {"YYYY-MM-DD HH" -> that hour's UTC offset, or None when a transition touches the
# hour (then each time goes through to_utc)}. Bounded; a race only recomputes an entry.
_HOUR_OFFSETS: dict[ZoneInfo, dict[str, timedelta | None]] = {}
_HOUR_END = timedelta(minutes=59, seconds=59, microseconds=999_999)


def _hour_offset(tz: ZoneInfo, local: datetime) -> timedelta | None:
    start = local.replace(minute=0, second=0, microsecond=0, tzinfo=tz, fold=0)
    end = start + _HOUR_END
    offsets = {
        start.utcoffset(),
        start.replace(fold=1).utcoffset(),
        end.utcoffset(),
        end.replace(fold=1).utcoffset(),
    }
    return offsets.pop() if len(offsets) == 1 else None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# zone -> {wall-clock text -> its UTC time}: the legs of one call share times, and a page
# holds many legs of few calls. Bounded (emptied when full); a race only recomputes.
_TIMES: dict[ZoneInfo, dict[str, datetime]] = {}


def _time(text: Any, name: str, tz: ZoneInfo) -> datetime | None:
    if text is None:
        return None
    if type(text) is str:
        times = _TIMES.get(tz)
        if times is None or len(times) > 50_000:
            times = _TIMES[tz] = {}
        known = times.get(text)
        if known is None:
            known = times[text] = _time_of_text(text, name, tz)
        return known
    return _time_slow(text, name, tz)


def _time_of_text(text: str, name: str, tz: ZoneInfo) -> datetime:
    if (
        len(text) == 19
        and text[10] in " T"
        and text[13] == ":"
        and text[16] == ":"
        and text[4] == "-"
        and text[7] == "-"
    ):
        try:  # the wall-clock reading, labelled UTC for now; corrected by the offset below
            wall = datetime.fromisoformat(text + "+00:00")
        except ValueError:
            raise RejectedRecord(f"{name}: not a valid time: {_show(text)}") from None
        hours = _HOUR_OFFSETS.get(tz)
        if hours is None or len(hours) > 100_000:
            hours = _HOUR_OFFSETS[tz] = {}
        hour = text[:13]
        try:
            offset = hours[hour]
        except KeyError:
            offset = hours[hour] = _hour_offset(tz, wall.replace(tzinfo=None))
        try:
            if offset is None:
                return to_utc(wall.replace(tzinfo=None), tz)
            return wall - offset
        except OverflowError:
            raise RejectedRecord(f"{name}: not a valid time: {_show(text)}") from None
    return _time_slow(text, name, tz)


def _time_slow(text: Any, name: str, tz: ZoneInfo) -> datetime:
    match = _TIME_TEXT.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise RejectedRecord(f"{name}: not a time: {_show(text)}")
    base, fraction, offset = match.groups()
    if fraction:
        base += fraction[:7]  # datetime keeps microseconds: drop the digits beyond
    if offset:
        base += offset
    try:
        return to_utc(datetime.fromisoformat(base), tz)
    except (ValueError, OverflowError):
        raise RejectedRecord(f"{name}: not a valid time: {_show(text)}") from None


# --- integers ------------------------------------------------------------------------


def _int(value: Any, name: str) -> int | None:
    kind = type(value)
    if kind is int:
        number: int = value
    elif value is None:
        return None
    elif isinstance(value, str):
        if is_no_value(value):
            return None
        match = _INT_TEXT.fullmatch(value)
        if match is None:
            raise RejectedRecord(f"{name}: not an integer: {_show(value)}")
        digits = match.group(1)
        if len(digits) > 12:
            raise RejectedRecord(f"{name}: out of range: {_show(value)}")
        number = int(digits)
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, int) and not isinstance(value, bool)
    ):
        number = int(value)
    else:
        raise RejectedRecord(f"{name}: not an integer: {_show(value)}")
    if not _INT_MIN <= number <= _INT_MAX:
        raise RejectedRecord(f"{name}: out of range: {_show(value)}")
    return number


# --- the record ----------------------------------------------------------------------


def normalize(raw: Mapping[str, Any], tz: ZoneInfo) -> Cdr | Reject:
    """Type one raw record; never raises (a Reject carries the reason instead)."""
    try:
        return _normalize(raw, tz)
    except RejectedRecord as bad:
        return Reject(bad.reason, _whole(raw), _callid_or_none(raw))
    except Exception as exc:  # the contract: a bad record never stops the run
        return Reject(f"cannot normalize: {type(exc).__name__}", _whole(raw), None)


SAME_CALLID = (
    "another record of the same answer has this callid and other content, and reads as the "
    "later one (the provider does not promise unique callids): that one is stored in cdrs, "
    "this one kept here"
)
_NO_TIME = datetime.min.replace(tzinfo=UTC)


def _lateness(leg: Cdr) -> tuple[datetime, datetime, datetime, int, str]:
    """Which of two differing records of one callid reads as the later: by start, then
    connect, disconnect, duration (a ringing leg < talking < ended), then content hash, so
    the choice does not depend on the order of the answer."""
    return (
        leg.detect_time or _NO_TIME,
        leg.connect_time or _NO_TIME,
        leg.disconnect_time or _NO_TIME,
        leg.duration or 0,
        leg.content_hash,
    )


class NormalizedPage(NamedTuple):
    """A page of raw records, normalized: one leg per callid, sorted by callid, and the
    records that did not normalize or lost to another record of the same callid with
    other content that reads as the later one (`SAME_CALLID`, `_lateness`)."""

    legs: list[Cdr]
    rejects: list[Reject]


def normalize_page(records: Iterable[Mapping[str, Any]], tz: ZoneInfo) -> NormalizedPage:
    """Normalize every record of a page and dedup the legs by callid (pure; never raises).
    Every job reads its pages through this one function."""
    legs: dict[str, Cdr] = {}
    lost: dict[str, dict[str, Cdr]] = {}  # callid -> content hash -> a version that lost
    rejects: list[Reject] = []
    for record in records:
        result = normalize(record, tz)
        if not isinstance(result, Cdr):
            rejects.append(result)
            continue
        kept = legs.get(result.callid)
        if kept is None or kept.content_hash == result.content_hash:
            legs[result.callid] = result  # new, or the same record again (the quirk)
            continue
        loser = result
        if _lateness(result) > _lateness(kept):
            legs[result.callid], loser = result, kept
        lost.setdefault(result.callid, {})[loser.content_hash] = loser
    for callid, versions in lost.items():
        versions.pop(legs[callid].content_hash, None)
        rejects += [Reject(SAME_CALLID, leg.raw, callid) for leg in versions.values()]
    return NormalizedPage([legs[key] for key in sorted(legs)], rejects)


def dedup(legs: Iterable[Cdr]) -> list[Cdr]:
    """One leg per callid, the last one read winning, sorted by callid."""
    latest = {leg.callid: leg for leg in legs}
    return [latest[key] for key in sorted(latest)]


def _normalize(raw: Mapping[str, Any], tz: ZoneInfo) -> Cdr | Reject:
    record = raw if type(raw) is dict else _whole(raw)
    if MALFORMED_KEY in record:
        return Reject(str(record[MALFORMED_KEY]), record, None)
    canon = _canonical_record(record)
    blob = _encode(canon)
    if blob is None:
        return Reject("record holds text that is not valid unicode", _storable(record), None)
    get = canon.get
    callid = get("callid")
    if callid is None:
        return Reject("missing callid", record, None)
    if type(callid) is not str:
        return Reject("callid: not a scalar", record, None)
    if b"\\u0000" in blob and _has_nul(canon):  # PostgreSQL text and jsonb refuse NUL
        safe_callid = callid if "\x00" not in callid else None
        return Reject("record contains a NUL character", _storable(record), safe_callid)
    texts = list(map(get, TEXT_FIELDS))
    if blob.find(b"{", 1) >= 0 or b"[" in blob:  # maybe a nested value: make it JSON text
        texts = [_text_of(text) for text in texts]
    return _new_cdr(  # == Cdr(...), without the Python-level __new__ frame (hot path)
        Cdr,
        (
            callid,
            *texts,
            _integer(record.get("duration"), "duration"),
            _integer(record.get("ring_time"), "ring_time"),
            _time(get("detect_time"), "detect_time", tz),
            _time(get("connect_time"), "connect_time", tz),
            _time(get("disconnect_time"), "disconnect_time", tz),
            record,
            _hash_hex(blob),
        ),
    )


def _integer(value: Any, name: str) -> int | None:
    """An integer field: plain digits (maybe negative), the usual case, the quick way;
    anything else through `_int`."""
    if type(value) is str:
        if (
            value.isascii()
            and len(value) < 10
            and (value.isdigit() or (value[:1] == "-" and value[1:].isdigit()))
        ):
            return int(value)
    elif type(value) is int and _INT_MIN <= value <= _INT_MAX:
        return value
    return _int(value, name)


_new_cdr = tuple.__new__
_HASHER = blake2b(digest_size=16)


def _hash_hex(blob: bytes) -> str:
    hasher = _HASHER.copy()  # cheaper than building a keyed-size blake2b per record
    hasher.update(blob)
    return hasher.hexdigest()


def _storable(value: Any) -> Any:
    """A copy that jsonb accepts: NUL spelled `\\u0000`, lone surrogates as U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value.replace("\x00", "\\u0000"))
    if isinstance(value, Mapping):
        return {_storable(str(k)): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


def _whole(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, Mapping):
        return {str(k): v for k, v in raw.items()}
    return {MALFORMED_KEY: f"record is not an object: {_show(raw)}"}


def _callid_or_none(raw: Any) -> str | None:
    try:
        text = _canon(raw.get("callid"))
    except Exception:  # best effort, for the reject row only
        return None
    if not isinstance(text, str) or "\x00" in text:
        return None
    return text

"""Normalization: raw record -> typed Cdr in UTC, or a Reject; never an exception."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from etl import normalize as nz
from etl.normalize import (
    INT_FIELDS,
    TEXT_FIELDS,
    TIME_FIELDS,
    Cdr,
    Reject,
    content_hash,
    normalize,
    to_utc,
)
from etl.records import MALFORMED_KEY

CR = ZoneInfo("America/Costa_Rica")
NY = ZoneInfo("America/New_York")


def record(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "callid": "1690000001",
        "original_callid": "",
        "ref_callid": "0",
        "type": "incoming",
        "ani": "50688887777",
        "dnis": "*34",
        "ani_user": "8569841",
        "dnis_user": "8569842",
        "name_endpoint_ani": "Recepción",
        "name_endpoint_dnis": "Soporte, Nivel 2",
        "route_name": "",
        "end_reason": "OK",
        "duration": "35",
        "ring_time": "-2",
        "detect_time": "2024-05-01 10:00:00",
        "connect_time": "2024-05-01 10:00:05",
        "disconnect_time": "2024-05-01 10:00:40",
        "codec": "PCMU",
    }
    base.update(overrides)
    return base


def cdr(raw: dict[str, Any], tz: ZoneInfo = CR) -> Cdr:
    result = normalize(raw, tz)
    assert isinstance(result, Cdr), result
    return result


def reject(raw: Any, tz: ZoneInfo = CR) -> Reject:
    result = normalize(raw, tz)
    assert isinstance(result, Reject), result
    return result


# --- shape ----------------------------------------------------------------------------


def test_field_order_is_the_copy_column_order() -> None:
    """Cdr fields are exactly the cdrs COPY columns, in order, and the field groups agree."""
    assert Cdr._fields == (
        "callid",
        *TEXT_FIELDS,
        *INT_FIELDS,
        *TIME_FIELDS,
        "raw",
        "content_hash",
    )


def test_a_usual_record_is_typed() -> None:
    """A usual record gets text, ints and UTC times, and keeps the very dict it came in."""
    raw = record()
    result = cdr(raw)
    assert result.raw is raw
    assert result.callid == "1690000001"
    assert result.original_callid is None
    assert result.ref_callid == "0"
    assert result.name_endpoint_dnis == "Soporte, Nivel 2"
    assert result.duration == 35
    assert result.ring_time == -2
    assert result.detect_time == datetime(2024, 5, 1, 16, 0, tzinfo=UTC)
    assert result.disconnect_time == datetime(2024, 5, 1, 16, 0, 40, tzinfo=UTC)
    assert len(result.content_hash) == 32
    int(result.content_hash, 16)
    assert raw == record()  # untouched


# --- no-value tokens ----------------------------------------------------------------------

NO_VALUES = [
    None,
    "",
    "null",
    "NULL",
    "Null",
    "None",
    "none",
    "NONE",
    " null ",
    "   ",
    "\t",
    "0000-00-00 00:00:00",
    "0000-00-00",
    "0000-00-00T00:00:00",
    " 0000-00-00 00:00:00.000 ",
]


@pytest.mark.parametrize("token", NO_VALUES)
def test_no_value_tokens_become_none_in_every_field_kind(token: Any) -> None:
    """Every no-value token reads as None in text, integer and time fields alike."""
    result = cdr(record(type=token, duration=token, connect_time=token))
    assert (result.type, result.duration, result.connect_time) == (None, None, None)


@pytest.mark.parametrize("text", ["0", "None of them", "nil", "NaN", " x ", "0000"])
def test_text_that_is_not_a_token_is_kept_exactly(text: str) -> None:
    """Text that only resembles a token, or carries spaces around it, is kept as sent."""
    assert cdr(record(route_name=text)).route_name == text


def test_whitespace_list_matches_pythons_own() -> None:
    """The first-character shortcut knows every character str.strip() removes."""
    import sys

    spaces = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert spaces == set(nz._WHITESPACE)


# --- text fields ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (8569841, "8569841"),
        (0, "0"),
        (-5, "-5"),
        (5.0, "5"),
        (2.5, "2.5"),
        (True, "true"),
        (False, "false"),
        ("007", "007"),
        ({"b": 1, "a": None}, '{"a":null,"b":"1"}'),
        ([1, "x"], '["1","x"]'),
    ],
)
def test_text_fields_take_numbers_as_decimal_text(value: Any, text: str) -> None:
    """Numbers become decimal text (integral floats without .0); booleans and JSON stay text."""
    assert cdr(record(ani=value)).ani == text


def test_numeric_callid_becomes_text() -> None:
    """A callid sent as a number is the same key as the callid sent as text."""
    assert cdr(record(callid=8569841)).callid == "8569841"


@pytest.mark.parametrize("callid", [None, "", "null", "  ", "0000-00-00"])
def test_missing_callid_is_rejected(callid: Any) -> None:
    """No callid, or a no-value callid, is a Reject named 'missing callid'."""
    raw = record(callid=callid)
    result = reject(raw)
    assert result == Reject("missing callid", raw, None)
    assert reject({k: v for k, v in raw.items() if k != "callid"}).reason == "missing callid"


def test_nested_callid_is_rejected() -> None:
    """A callid that is an object or a list is no key."""
    assert reject(record(callid={"id": 1})).reason == "callid: not a scalar"


def test_nul_anywhere_is_rejected() -> None:
    """A NUL character (which PostgreSQL text and jsonb refuse) rejects the record whole."""
    nul = reject(record(name_endpoint_ani="a\x00b"))
    assert nul.reason == "record contains a NUL character"
    assert nul.raw["name_endpoint_ani"] == "a\\u0000b"  # a storable copy for the rejects table
    assert nul.callid == "1690000001"
    assert reject(record(extra={"x": "\x00"})).reason == "record contains a NUL character"
    assert cdr(record(note="a\\u0000b")).callid  # the escape's text itself is fine


# --- integer fields --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "number"),
    [(35, 35), ("35", 35), (" 35 ", 35), ("35.0", 35), ("+7", 7), (35.0, 35), ("-3", -3)],
)
def test_integers_from_ints_strings_and_integral_floats(value: Any, number: int) -> None:
    """duration/ring_time read ints, digit strings (spaces, sign, .0) and integral floats."""
    result = cdr(record(duration=value, ring_time=value))
    assert (result.duration, result.ring_time) == (number, number)


def test_negative_ring_time_is_kept() -> None:
    """A negative ring_time is what the API said, and stays negative."""
    assert cdr(record(ring_time=-4)).ring_time == -4


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("abc", "duration: not an integer"),
        ("35.5", "duration: not an integer"),
        (35.5, "duration: not an integer"),
        (True, "duration: not an integer"),
        ("3_5", "duration: not an integer"),
        ("٣٥", "duration: not an integer"),
        ([1], "duration: not an integer"),
        (2**31, "duration: out of range"),
        ("99999999999999999999", "duration: out of range"),
    ],
)
def test_a_non_integer_rejects_naming_the_field(value: Any, reason: str) -> None:
    """A value that is no integer (or overflows PostgreSQL integer) rejects, naming the field."""
    raw = record(duration=value)
    result = reject(raw)
    assert result.reason.startswith(reason)
    assert result.raw is raw
    assert result.callid == "1690000001"


# --- time fields ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01 10:00:05",
        "2024-05-01T10:00:05",
        " 2024-05-01 10:00:05 ",
        "2024-05-01 10:00:05.0",
        "2024-05-01T10:00:05.000000",
        "2024-05-01 10:00:05.0000000001",
    ],
)
def test_times_accept_space_t_and_fractions(text: str) -> None:
    """Provider wall-clock times read with a space or T, with or without fractional seconds."""
    assert cdr(record(connect_time=text)).connect_time == datetime(2024, 5, 1, 16, 0, 5, tzinfo=UTC)


def test_a_time_with_its_own_offset_is_taken_at_that_offset() -> None:
    """A time carrying Z or an offset is converted from that offset, not the account zone."""
    result = cdr(
        record(connect_time="2024-05-01 10:00:05Z", detect_time="2024-05-01T10:00:00+02:00")
    )
    assert result.connect_time == datetime(2024, 5, 1, 10, 0, 5, tzinfo=UTC)
    assert result.detect_time == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "2024-02-30 10:00:00",
        "2024-05-01 24:00:00",
        "2024-05-01",
        "2024-05-01 10:00",
        0,
        "9999-12-31 23:59:59",
        "2024-W18-3T10:00:00",
    ],
)
def test_an_unparseable_time_rejects_naming_the_field(text: Any) -> None:
    """Anything but a full date and time (or a time that overflows in UTC) rejects, named."""
    result = reject(record(disconnect_time=text), tz=CR)
    assert result.reason.startswith("disconnect_time: not ")


def test_results_are_aware_utc() -> None:
    """Every time is aware and in UTC."""
    result = cdr(record())
    for name in TIME_FIELDS:
        moment = getattr(result, name)
        assert moment.tzinfo is UTC
        assert moment.utcoffset() == timedelta(0)


# --- DST ----------------------------------------------------------------------------------------


def test_ambiguous_time_is_its_first_occurrence() -> None:
    """New York 2024-11-03 01:30 (repeated hour) is read at EDT, the first occurrence."""
    assert to_utc(datetime(2024, 11, 3, 1, 30), NY) == datetime(2024, 11, 3, 5, 30, tzinfo=UTC)
    assert cdr(record(detect_time="2024-11-03 01:30:00"), NY).detect_time == datetime(
        2024, 11, 3, 5, 30, tzinfo=UTC
    )


def test_nonexistent_time_is_shifted_forward_by_the_gap() -> None:
    """New York 2024-03-10 02:30 (skipped hour) is read at EST, i.e. lands at 03:30 EDT."""
    expected = datetime(2024, 3, 10, 7, 30, tzinfo=UTC)
    assert to_utc(datetime(2024, 3, 10, 2, 30), NY) == expected
    assert expected.astimezone(NY).replace(tzinfo=None) == datetime(2024, 3, 10, 3, 30)
    assert cdr(record(detect_time="2024-03-10 02:30:00"), NY).detect_time == expected


def test_hours_around_both_2024_changes_convert_as_zoneinfo_does() -> None:
    """Each second of the hours around both 2024 New York changes converts like to_utc."""
    for day in (datetime(2024, 3, 10), datetime(2024, 11, 3)):
        for second in range(0, 4 * 3600, 7):
            local = day + timedelta(seconds=second)
            text = local.strftime("%Y-%m-%d %H:%M:%S")
            got = cdr(record(detect_time=text), NY).detect_time
            assert got == to_utc(local, NY), text


local_times = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2037, 12, 31))


@settings(max_examples=500, deadline=None)
@given(local_times)
def test_to_utc_round_trips_non_ambiguous_new_york_times(local: datetime) -> None:
    """Every existing, non-ambiguous New York wall-clock time survives UTC and back."""
    local = local.replace(microsecond=0)
    first = local.replace(tzinfo=NY, fold=0)
    second = local.replace(tzinfo=NY, fold=1)
    assume(first.utcoffset() == second.utcoffset())  # neither ambiguous nor in a gap
    utc = to_utc(local, NY)
    assert utc.tzinfo is UTC
    assert utc.astimezone(NY).replace(tzinfo=None) == local


@settings(max_examples=300, deadline=None)
@given(
    local_times,
    st.sampled_from(
        [
            "America/New_York",
            "Europe/London",
            "Australia/Lord_Howe",
            "America/Costa_Rica",
            "Asia/Kathmandu",
            "UTC",
        ]
    ),
)
def test_normalize_times_agree_with_to_utc(local: datetime, zone: str) -> None:
    """normalize's fast time path (its per-hour offset cache) agrees with to_utc everywhere."""
    tz = ZoneInfo(zone)
    local = local.replace(microsecond=0)
    got = cdr(record(detect_time=local.strftime("%Y-%m-%d %H:%M:%S")), tz).detect_time
    assert got == to_utc(local, tz)


# --- malformed input ----------------------------------------------------------------------------


def test_a_malformed_marker_becomes_a_reject_with_its_reason() -> None:
    """A decoder's malformed row is rejected with the decoder's reason."""
    raw = {MALFORMED_KEY: "CSV row has 3 cells, the header 17", "cells": ["a", "b", "c"]}
    assert reject(raw) == Reject("CSV row has 3 cells, the header 17", raw, None)


@pytest.mark.parametrize("value", [None, 5, "text", [1, 2], b"bytes"])
def test_a_non_object_is_rejected(value: Any) -> None:
    """Something that is not a mapping at all is rejected, not raised."""
    result = reject(value)
    assert result.reason.startswith("record is not an object")
    assert MALFORMED_KEY in result.raw


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.sampled_from(NO_VALUES[1:] + ["35", "-2", "2024-03-10 02:30:00", "2024-13-01 00:00:00"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
field_names = st.sampled_from(["callid", *TEXT_FIELDS, *INT_FIELDS, *TIME_FIELDS]) | st.text()


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(field_names, json_values, max_size=20))
def test_normalize_never_raises(raw: dict[str, Any]) -> None:
    """Any dict of JSON values normalizes to a Cdr or a Reject, and never raises."""
    result = normalize(raw, NY)
    assert isinstance(result, Cdr | Reject)
    copied = ("record contains a NUL character", "record holds text that is not valid unicode")
    assert result.raw is raw or (isinstance(result, Reject) and result.reason in copied)
    if isinstance(result, Cdr):
        assert result.content_hash == content_hash(raw)


@settings(deadline=None)
@given(st.from_type(object))
def test_normalize_never_raises_on_anything(value: Any) -> None:
    """Even a value that is no mapping (or a strange one) gives a Reject, not an exception."""
    assert isinstance(normalize(value, NY), Cdr | Reject)


# --- content hash -------------------------------------------------------------------------------

numeric_fields = ["callid", "ani", "ani_user", "dnis_user", "duration", "ring_time", "ref_callid"]


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {name: st.integers(min_value=-(2**31), max_value=2**31 - 1) for name in numeric_fields}
    ),
    st.dictionaries(st.sampled_from(["route_name", "type", "extra"]), st.text(), max_size=3),
)
def test_numbers_and_numbers_as_strings_give_equal_cdrs_and_hashes(
    numbers: dict[str, int], texts: dict[str, str]
) -> None:
    """The same record as JSON numbers and as CSV/HTML strings gives equal Cdrs and hashes."""
    as_numbers = {**texts, **numbers}
    as_strings = {**texts, **{k: str(v) for k, v in numbers.items()}}
    a, b = normalize(as_numbers, CR), normalize(as_strings, CR)
    assert type(a) is type(b)
    assert a._replace(raw={}) == b._replace(raw={})
    assert content_hash(as_numbers) == content_hash(as_strings)


flat_records = st.dictionaries(
    st.sampled_from(["callid", *TEXT_FIELDS, *INT_FIELDS, *TIME_FIELDS, "codec", "extra"]),
    st.none() | st.text(max_size=8) | st.integers(),
    min_size=1,
)


@settings(max_examples=500, deadline=None)
@given(flat_records, st.data())
def test_hash_changes_when_any_field_changes(raw: dict[str, Any], data: st.DataObject) -> None:
    """Changing any one field's canonical value, or adding/removing a value, changes the hash."""
    key = data.draw(st.sampled_from(sorted(raw)))
    old = nz._canon(raw[key])
    new_value = data.draw(st.none() | st.text(max_size=8) | st.integers())
    assume(nz._canon(new_value) != old)
    assert content_hash({**raw, key: new_value}) != content_hash(raw)
    without = {k: v for k, v in raw.items() if k != key}
    assert (content_hash(without) == content_hash(raw)) is (old is None)
    assert content_hash({**raw, "added_field": "x"}) != content_hash(raw)
    assert content_hash({**raw, "added_field": ""}) == content_hash(raw)


def test_hash_equivalences_and_distinctions() -> None:
    """The hash ignores key order and no-value spelling; it tells bool, "35.0" and 35 apart."""
    raw = record()
    assert content_hash(dict(reversed(list(raw.items())))) == content_hash(raw)
    for token in ("", "null", "None", None, "0000-00-00 00:00:00"):
        assert content_hash(record(route_name=token)) == content_hash(record(route_name=None))
    assert content_hash(record(duration=35)) == content_hash(record(duration="35"))
    assert content_hash(record(duration=5.0)) == content_hash(record(duration="5"))
    assert content_hash(record(duration=True)) != content_hash(record(duration=1))
    assert content_hash(record(duration="35.0")) != content_hash(record(duration="35"))
    assert content_hash(record(duration="35")) != content_hash(record(duration=" 35"))
    assert content_hash({"a": "1", "b": None}) == content_hash({"a": "1"})  # no value = absent
    assert content_hash({"a": "1", "b": "0"}) != content_hash({"a": "1"})


def test_hash_survives_text_that_is_not_valid_unicode() -> None:
    """A lone surrogate cannot be UTF-8: the hash still works, normalize rejects the record."""
    assert len(content_hash({"callid": "\ud800"})) == 32
    bad = reject(record(ani="\ud800"))
    assert bad.reason == "record holds text that is not valid unicode"
    assert bad.raw["ani"] == "\ufffd"  # a storable (UTF-8 encodable) copy

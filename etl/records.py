"""What the API edge hands to the core: raw records, as the provider sent them.

A record is a dict of field name to value (strings, numbers, null), every field kept.
A decoder that cannot make a record of a row (a CSV row with too many cells, a JSON item
that is not an object) hands on `{MALFORMED_KEY: reason, ...}` instead, and normalization
turns it into a reject: a bad row is kept, never dropped.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MALFORMED_KEY", "RawRecord"]

RawRecord = dict[str, Any]

MALFORMED_KEY = "_malformed"

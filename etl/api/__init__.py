"""The CallMyWay edge: the HTTP client (retries, redaction), body decoding, page walking."""

from etl.api.client import CdrApiClient, Credentials, RequestStats
from etl.api.decode import decode
from etl.api.paging import walk_window
from etl.api.retry import RetryPolicy

__all__ = ["CdrApiClient", "Credentials", "RequestStats", "RetryPolicy", "decode", "walk_window"]

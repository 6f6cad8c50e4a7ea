"""Bounded reads of HTTP answers from identity providers (requests, synchronous).

An IdP that answers tens of megabytes, or drips bytes forever, must not fill memory or hold the
caller: the body is read in chunks up to `MAX_ANSWER_BYTES` and within `deadline` seconds, then
parsed. Discovery documents, key sets and token answers are a few KiB.
"""

from __future__ import annotations

import json
import time

import requests
import urllib3

MAX_ANSWER_BYTES = 1 << 20  # 1 MiB


class AnswerError(ValueError):
    """The answer is too large, too slow or not the JSON expected; the message says which."""


class NotJson(AnswerError):
    """The answer arrived whole but is not JSON."""


def bounded_body(r: requests.Response, limit: int = MAX_ANSWER_BYTES, deadline: float = 30) -> bytes:
    """The body of `r` (fetched with stream=True), at most `limit` bytes, read within `deadline` s.
    Afterwards `r.content` holds it too, and the connection goes back to the pool."""
    if r._content_consumed:  # fetched without stream=True: already in memory, only the size to check
        if len(r.content) > limit:
            raise AnswerError(f"the answer is more than the {limit} bytes accepted")
        return r.content
    try:
        declared = int(r.headers.get("Content-Length", "0"))
    except ValueError:
        declared = 0
    if declared > limit:
        r.close()
        raise AnswerError(f"the answer is {declared} bytes, more than the {limit} accepted")
    end = time.monotonic() + deadline
    body = bytearray()
    try:
        # read1: whatever has arrived, so that a server dripping bytes meets the deadline too.
        while chunk := r.raw.read1(65536, decode_content=True):
            body += chunk
            if len(body) > limit:
                raise AnswerError(f"the answer is more than the {limit} bytes accepted")
            if time.monotonic() > end:
                raise AnswerError(f"the answer took more than {deadline:g} s to arrive")
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
        r.close()
        raise AnswerError(f"the answer was cut off ({type(e).__name__})") from None
    except AnswerError:
        r.close()  # drops the connection: the rest of the answer is never read
        raise
    r._content, r._content_consumed = bytes(body), True  # as requests itself stores a read body
    r.close()  # read to the end: releases the connection to the pool
    return r._content


def bounded_json(r: requests.Response, limit: int = MAX_ANSWER_BYTES, deadline: float = 30):
    """The JSON document of `r` (fetched with stream=True), read as `bounded_body` does."""
    body = bounded_body(r, limit, deadline)
    try:
        return json.loads(body)
    except ValueError:
        ctype = r.headers.get("Content-Type", "no content type")
        raise NotJson(f"the answer is not JSON ({ctype}, {len(body)} bytes)") from None

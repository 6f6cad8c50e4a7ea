"""When to renew tokens and keys, and how long to back off (with jitter). Pure but for the random
jitter: times are plain epoch floats."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import tenacity

# Renew once this share of a lifetime has passed: with 60 s keys, at 40 s; with 1 h, at 40 min.
RENEW_AT = 2 / 3
# The expiry told to rclone's SDK: between our renewal and the real end of the keys.
REPORT_AT = 5 / 6
MIN_LEAD = 5.0       # never plan closer than this to the real expiry


@dataclass(frozen=True)
class Lifetime:
    issued: float
    expires: float

    @property
    def seconds(self) -> float:
        return max(0.0, self.expires - self.issued)

    def renew_at(self, share: float = RENEW_AT, max_lead: float | None = 600.0) -> float:
        """The moment to start renewing: after ``share`` of the lifetime, but at most
        ``max_lead`` seconds before the end (12 h keys are not renewed after 8 h but 10 min
        before), and never later than MIN_LEAD seconds before the end."""
        lead = self.seconds * (1 - share)
        if max_lead is not None:
            lead = min(lead, max(max_lead, 0.0))
        lead = max(lead, min(MIN_LEAD, self.seconds / 2))
        return self.expires - lead

    def reported_expiry(self) -> float:
        """What rclone is told: later than renew_at, earlier than the real expiry."""
        r = self.renew_at()
        return r + (self.expires - r) * 0.5

    def remaining(self, now: float) -> float:
        return self.expires - now


class _Attempt:
    """What tenacity's wait strategies read of a retry state."""

    def __init__(self, number: int):
        self.attempt_number = number


def backoff(attempt: int, base: float = 1.0, cap: float = 60.0, jitter: bool = True) -> float:
    """The wait before retry number ``attempt`` (from 0): up to base * 2**attempt seconds, never
    more than ``cap``. With jitter (the default), a random wait between base/2 and that bound, so
    that hundreds of servers that lost the IdP or the STS at the same moment do not all come back
    in lockstep."""
    if not jitter:
        return min(cap, base * (2 ** max(0, attempt)))
    wait = tenacity.wait_random_exponential(multiplier=base, max=cap, min=min(base / 2, cap))
    return float(wait(_Attempt(max(0, attempt) + 1)))


def retry_delay(attempt: int, now: float, deadline: float | None, cap: float = 30.0, jitter: bool = True) -> float:
    """Back off after a failed renewal (jittered); close to the deadline, retry more often (at
    least once before it)."""
    d = backoff(attempt, 1.0, cap, jitter)
    if deadline is not None:
        left = deadline - now
        if left > 0:
            d = min(d, max(1.0, left / 3))
    return d


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

"""The last line of defence against leaks: every secret sts-wire has seen (tokens, refresh
tokens, S3 keys) is masked in any log record that would carry it."""

from __future__ import annotations

import logging


class SecretFilter(logging.Filter):
    """Last line of defence: any current secret that reaches a log record is masked."""

    def __init__(self):
        super().__init__()
        self.secrets: set[str] = set()

    def add(self, *values: str | None) -> None:
        for v in values:
            if v and len(v) >= 8:
                self.secrets.add(v)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            msg = record.getMessage()
            hit = False
            for s in self.secrets:
                if s in msg:
                    msg = msg.replace(s, "***")
                    hit = True
            if hit:
                record.msg, record.args = msg, ()
        return True


SECRETS = SecretFilter()

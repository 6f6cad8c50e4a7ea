"""The reliability report, docs/reliability.md, written by the test run itself.

Every fault, load, bad-input and secrets case the suite proves is listed in CASES. A test that
proves one asks for the ``reliability`` fixture and calls ``reliability.record(case, result)`` with
what it measured ("remounted after 3.1 s, 40 files intact"); the row counts as passed only if the
test passes. Benchmarks call ``record_measurement(case, result, source)``. At the end of a session
the rows are merged into docs/reliability.json (rows of cases this run did not reach are kept from
earlier runs, so a single test file updates only its own rows) and docs/reliability.md is rendered
from it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JSON_FILE = REPO / "docs" / "reliability.json"
MD_FILE = REPO / "docs" / "reliability.md"

SECTIONS = ("Faults", "Load", "Bad input", "Secrets and isolation")

# case id -> (section, what is proven). Ids are stable: the report is keyed by them.
CASES: dict[str, tuple[str, str]] = {
    # Faults: files written before the fault are intact after it (checksums).
    "fault.rclone-killed": ("Faults", "rclone killed under a running notebook server"),
    "fault.rclone-hung": ("Faults", "rclone hung (SIGSTOP) under a running notebook server"),
    "fault.s3-restart": ("Faults", "S3 server restarted under running mounts"),
    "fault.idp-outage": ("Faults", "IdP down for longer than the S3 keys' lifetime"),
    "fault.keys-expire-mid-write": ("Faults", "S3 keys expiring in the middle of a long write"),
    "fault.hub-restart.local": ("Faults", "hub restarted while a local server runs"),
    "fault.hub-restart.docker": ("Faults", "hub restarted while a Docker server runs"),
    "fault.hub-restart.slurm": ("Faults", "hub restarted while a Slurm server runs"),
    "fault.slurm-scancel": ("Faults", "Slurm job cancelled by an admin"),
    "fault.container-killed": ("Faults", "server container killed"),
    "fault.container-oom": ("Faults", "server container out of memory"),
    "fault.cache-disk-full": ("Faults", "rclone's cache folder on a full disk"),
    # Load: figures printed by benchmarks/ scripts.
    "load.logins-and-spawns": ("Load", "30 logins and 10 spawns at once (hub API p50/p99)"),
    "load.token-stampede": ("Load", "100 servers ask the hub for a fresh access token in one second"),
    "load.notebook-save": ("Load", "saving a 1 MB notebook through the contents API"),
    "load.small-files": ("Load", "writing and reading 2,000 files of 4 KiB"),
    "load.untar": ("Load", "unpacking a source tarball of ~1,000 files"),
    "load.git-clone": ("Load", "git clone of a local repository"),
    "load.concurrent-rw": ("Load", "20 concurrent readers and writers on one user's mounts"),
    # Bad input: corpora kept in the tests; each case a clear error and nothing changed.
    "bad.tokens": ("Bad input", "tokens: tampered, alg none, HMAC with the public key, expired, "
                   "wrong issuer/audience, oversized, garbage"),
    "bad.spawn-forms": ("Bad input", "spawn forms: outside the entitlement, injection, encodings, "
                        "duplicate fields"),
    "bad.config-files": ("Bad input", "configuration files"),
    "bad.mount-specs": ("Bad input", "mount specs: paths outside the roots, flags off the "
                        "allow-list, injection"),
    "bad.idp-answers": ("Bad input", "IdP answers malformed, huge or slow"),
    "bad.sts-answers": ("Bad input", "STS answers malformed, huge or slow"),
    "bad.cross-user-api": ("Bad input", "hub API requests with another user's token"),
    # Secrets and isolation.
    "secrets.local": ("Secrets and isolation", "no secret in clear after an end-to-end run: local"),
    "secrets.docker": ("Secrets and isolation", "no secret in clear after an end-to-end run: Docker"),
    "secrets.slurm": ("Secrets and isolation", "no secret in clear after an end-to-end run: Slurm"),
    "secrets.kubernetes": ("Secrets and isolation", "no secret in generated Kubernetes objects"),
    "isolation.buckets": ("Secrets and isolation", "alice cannot mount, list or read bob's bucket"),
    "isolation.token-api": ("Secrets and isolation", "alice cannot get bob's token through the hub"),
    "isolation.servers": ("Secrets and isolation", "alice cannot reach bob's server"),
    "isolation.group-buckets": ("Secrets and isolation", "only members of a group see its bucket"),
}


@dataclass
class Recorder:
    """What the tests of this session recorded, by case id."""
    rows: dict[str, dict] = field(default_factory=dict)

    def add(self, case: str, result: str, source: str) -> dict:
        if case not in CASES:
            raise KeyError(f"{case!r} is not a case of tests/testbed/reliability.py CASES")
        if not result.strip():
            raise ValueError(f"{case}: the measured result is empty")
        row = self.rows.get(case)
        if row is None or row["source"] != source:
            row = self.rows[case] = {"result": result, "source": source, "outcome": "running",
                                     "date": time.strftime("%Y-%m-%d")}
        else:  # one test may record a case in several steps
            row["result"] = f"{row['result']}; {result}"
        return row


_session = Recorder()


class CaseRecorder:
    def __init__(self, nodeid: str):
        self.nodeid = nodeid

    def record(self, case: str, result: str) -> None:
        """Record what this test measured for `case`; it counts once the test has passed."""
        _session.add(case, result, self.nodeid)


@pytest.fixture
def reliability(request) -> CaseRecorder:
    return CaseRecorder(request.node.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    for row in _session.rows.values():
        if row["source"] != item.nodeid:
            continue
        if report.failed:
            row["outcome"] = "FAILED"
        elif report.when == "call" and report.passed and row["outcome"] == "running":
            row["outcome"] = "passed"


def pytest_sessionfinish(session):
    if _session.rows:
        for row in _session.rows.values():
            if row["outcome"] == "running":  # interrupted before its call phase ended
                row["outcome"] = "FAILED"
        merge_and_render(_session.rows)


def record_measurement(case: str, result: str, source: str) -> None:
    """For benchmark scripts: a measured figure, written to the report at once."""
    rec = Recorder()
    rec.add(case, result, source)["outcome"] = "measured"
    merge_and_render(rec.rows)


def load_rows() -> dict[str, dict]:
    try:
        return json.loads(JSON_FILE.read_text())
    except FileNotFoundError:
        return {}


def merge_and_render(rows: dict[str, dict]) -> None:
    merged = {k: v for k, v in load_rows().items() if k in CASES}
    merged.update(rows)
    tmp = JSON_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")
    os.replace(tmp, JSON_FILE)
    MD_FILE.write_text(render(merged))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(rows: dict[str, dict]) -> str:
    out = [
        "# Reliability report",
        "",
        "Written by the test run itself (tests/testbed/reliability.py): each row is what a test or",
        "benchmark measured against the real services of the testbed, on the date shown. Do not",
        "edit by hand: run `scripts/test.sh` (and the benchmarks under `benchmarks/`) to refresh it.",
        "A case no run has reached yet says so.",
        "",
    ]
    for section in SECTIONS:
        out += [f"## {section}", "", "| Case | Result | Outcome | Proven by | Date |",
                "|---|---|---|---|---|"]
        for case, (sec, what) in CASES.items():
            if sec != section:
                continue
            row = rows.get(case)
            if row is None:
                out.append(f"| {_cell(what)} | not run yet | - | - | - |")
            else:
                out.append(f"| {_cell(what)} | {_cell(row['result'])} | {row['outcome']} | "
                           f"`{_cell(row['source'])}` | {row['date']} |")
        out.append("")
    return "\n".join(out)

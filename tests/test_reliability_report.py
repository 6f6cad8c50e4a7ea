"""docs/reliability.md: every case has a test or benchmark that records it, and the committed
report holds a measured, passing row for each."""

import json
import re
from pathlib import Path

import pytest

from tests.testbed import reliability

REPO = Path(__file__).resolve().parents[1]


def _recording_sources() -> str:
    files = [*REPO.glob("tests/test_*.py"), *REPO.glob("benchmarks/*.py")]
    return "\n".join(f.read_text() for f in files)


def test_every_case_is_recorded_by_a_test_or_a_benchmark():
    text = _recording_sources()
    missing = [case for case in reliability.CASES
               if not re.search(rf"""["']{re.escape(case)}["']""", text)]
    assert not missing, f"no test or benchmark records: {missing}"


def test_committed_report_has_a_passing_measured_row_for_every_case():
    rows = json.loads(reliability.JSON_FILE.read_text())
    absent = [c for c in reliability.CASES if c not in rows]
    bad = {c: r["outcome"] for c, r in rows.items()
           if c in reliability.CASES and r["outcome"] not in ("passed", "measured")}
    assert not absent, f"docs/reliability.json has no row for {absent}: run the suite and benchmarks"
    assert not bad, f"cases not passing in docs/reliability.json: {bad}"
    md = reliability.MD_FILE.read_text()
    for case, (_, what) in reliability.CASES.items():
        assert reliability._cell(what) in md, f"docs/reliability.md lacks {case}"
    assert "not run yet" not in md


def test_the_readme_links_the_report():
    assert "docs/reliability.md" in (REPO / "README.md").read_text()


def test_render_groups_cases_by_section_and_escapes_cells():
    rows = {"fault.rclone-killed": {"result": "back in 2.0 s | 20 files intact", "outcome": "passed",
                                    "source": "tests/t.py::x", "date": "2026-11-26"}}
    md = reliability.render(rows)
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections == [f"## {s}" for s in reliability.SECTIONS]
    assert "back in 2.0 s \\| 20 files intact | passed | `tests/t.py::x`" in md
    assert md.count("not run yet") == len(reliability.CASES) - 1


def test_recorder_refuses_unknown_cases_and_empty_results_and_joins_steps():
    rec = reliability.Recorder()
    with pytest.raises(KeyError, match="not a case"):
        rec.add("fault.nonexistent", "x", "t")
    with pytest.raises(ValueError, match="empty"):
        rec.add("fault.s3-restart", "  ", "t")
    rec.add("fault.s3-restart", "recovered in 4 s", "t")
    rec.add("fault.s3-restart", "12 files intact", "t")
    assert rec.rows["fault.s3-restart"]["result"] == "recovered in 4 s; 12 files intact"

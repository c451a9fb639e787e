"""The fleet report's model and page, from plain record documents (issue 15)."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest
from relayguard.domain.evidence import RECORD_SCHEMA
from relayguard.domain.report import FleetReport, build_report, exposure_text, group_of, render_html, row_of
from relayguard.errors import RecordError

AT = "2026-12-06T15:00:00+00:00"


def record(server: str, outcome: str, *, reason: str = "", generation: str = "modern", before: bool | None = True,
           after: bool | None = False, restarted: bool = False, at: str = AT, run_id: str = "sweep-1",
           **extra: Any) -> dict[str, Any]:
    """A record document as domain.evidence.record_document writes it, with the fields a report reads."""
    result = {"host": server, "mode": "fix", "outcome": outcome, "reason": reason, "generation": generation,
              "exposed_before": before, "exposed_after": after, "restarted": restarted, "steps": [], **extra}
    return {"schema": RECORD_SCHEMA, "run_id": run_id, "job_id": "j1", "trigger": "sweep", "alert_id": None,
            "server": server, "recorded_at": at, "result": result}


FLEET = [
    record("a.example", "remediated", restarted=True),
    record("b.example", "compliant", before=False, after=False),
    record("c.example", "unreachable", generation="", before=None, after=None, reason="connect: refused"),
    record("d.example", "noncompliant", after=None),
    record("e.example", "failed", reason="whmapi1-refused: no", after=True),
    record("f.example", "host-key-mismatch", generation="", before=None, after=None),
]


def report_of(documents: list[dict[str, Any]]) -> FleetReport:
    return build_report((row_of(d, f"/r/{i}.json") for i, d in enumerate(documents)), generated_at=AT)


def test_summary_counts_every_server_once_by_outcome_exposure_and_restart() -> None:
    report = report_of(FLEET)
    summary = (report.total, report.failed, report.exposed_before, report.exposed_after, report.restarted)
    assert summary == (6, 3, 3, 1, 1)
    assert dict(report.counts) == {"remediated": 1, "compliant": 1, "unreachable": 1, "noncompliant": 1, "failed": 1,
                                   "host-key-mismatch": 1}
    assert (report.title, report.runs) == ("RelayGuard fleet report: run sweep-1", ("sweep-1",))


def test_failures_come_first_most_severe_first_then_servers_left_as_they_were_then_the_fine_ones() -> None:
    servers = [row.server for row in report_of(FLEET).rows]
    # critical failures (failed, host-key-mismatch) by name, then the warning one, then held, then ok.
    assert servers == ["e.example", "f.example", "c.example", "d.example", "a.example", "b.example"]
    assert [group_of(o) for o in ("failed", "skipped", "not-cpanel", "some-future-outcome")] == [
        "failure", "held", "ok", "failure"]


def test_a_later_record_of_the_same_server_replaces_the_earlier_one_and_is_counted_as_superseded() -> None:
    first = record("a.example", "failed", reason="timeout", at="2026-12-06T15:00:00+00:00")
    again = record("a.example", "remediated", at="2026-12-06T15:05:00+00:00")
    report = report_of([again, first])
    assert [(row.server, row.outcome) for row in report.rows] == [("a.example", "remediated")]
    assert report.superseded == 1


def test_a_row_keeps_what_the_table_shows_and_where_the_whole_record_is() -> None:
    row = row_of(record("e.example", "failed", reason="x" * 1000, after=True), "s3://b/records/sweep-1/e/1.json")
    assert (row.severity, row.generation, row.exposed_before, row.exposed_after) == ("critical", "modern", True, True)
    assert row.record == "s3://b/records/sweep-1/e/1.json"
    assert row.reason.startswith("x" * 300)
    assert "clipped" in row.reason
    assert row.deliverability is None


def test_deliverability_counts_are_shown_only_where_a_result_has_them_and_added_up_over_the_fleet() -> None:
    plain = report_of(FLEET)
    assert (plain.has_deliverability, plain.deliverability) == (False, ())
    assert "Deliverability" not in render_html(plain)
    summary = {"domains": 12, "judged": 12, "failing": 3, "without_dmarc": 2, "ips": 2, "ips_without_fcrdns": 1}
    scanned = record("g.example", "compliant", deliverability={"judged": True, "summary": summary, "counts": {}})
    report = report_of([*FLEET, scanned, record("h.example", "compliant",
                                                deliverability={"summary": {"domains": 3, "judged": 3}})])
    assert report.deliverability_servers == 2
    assert dict(report.deliverability) == {"domains": 15, "judged": 15, "failing": 3, "without_spf": 0,
                                           "without_dkim": 0, "without_dmarc": 2, "ips": 2, "ips_without_fcrdns": 1,
                                           "dns_errors": 0}
    row = {r.server: r for r in report.rows}["g.example"]
    assert row.deliverability_text == ("12 domains: 3 breaking receiver rules, 2 without DMARC, "
                                       "1 sending IP without forward-confirmed PTR")
    assert (row.deliverability_failing, {r.server: r for r in report.rows}["a.example"].deliverability_failing) == (
        3, -1)
    page = render_html(report)
    assert "15 domains: 3 breaking receiver rules, 2 without DMARC" in page
    assert row.deliverability_text in page


def test_a_document_that_is_no_record_is_refused_by_name() -> None:
    with pytest.raises(RecordError, match=r"notes\.json: not a relayguard\.record/v1 record"):
        row_of({"schema": "something/else"}, "notes.json")


def test_exposure_reads_before_and_after() -> None:
    assert [exposure_text(True, False), exposure_text(True, None), exposure_text(None, None)] == [
        "yes → no", "yes", "-"]


class _Page(HTMLParser):
    """What a browser would build: the text of each cell of the server table, script elements and sources."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts = 0
        self.sources: list[str] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None
        self.csp = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts += 1
        self.sources += [value or "" for name, value in attrs if name in ("src", "href")]
        if tag == "td":
            self._cell = []
        if tag == "meta" and ("http-equiv", "Content-Security-Policy") in attrs:
            self.csp = dict(attrs)["content"] or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_untrusted_text_is_escaped_and_the_page_loads_nothing_and_runs_only_its_own_script() -> None:
    evil = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'
    html = render_html(report_of([record(evil, "failed", reason='"><b>bold</b>'), *FLEET]))
    page = _Page()
    page.feed(html)
    assert page.scripts == 1  # the page's own, at the end
    assert page.sources == []  # no CDN, no stylesheet, no image: nothing is fetched
    assert evil in page.cells  # the text, as text
    assert '"><b>bold</b>record/r/0.json' in page.cells  # the reason, then where the record is
    assert "<img src=x" not in html
    assert page.csp.startswith("default-src 'none'; ")
    assert "'unsafe-inline'" not in page.csp
    assert page.csp.count("'sha256-") == 2  # the style and the script, each by its hash


def test_an_empty_run_renders_a_page_that_says_so() -> None:
    report = build_report([], generated_at=AT)
    assert (report.total, report.title) == (0, "RelayGuard fleet report")
    assert "No records." in render_html(report)


def test_a_run_closed_with_servers_that_never_reported_says_how_many_left_no_record() -> None:
    # The planner closed the run past its deadline: 8 servers counted, 6 records written.
    rows = (row_of(d, f"/r/{i}.json") for i, d in enumerate(FLEET))
    report = build_report(rows, generated_at=AT, expected=8)
    assert (report.total, report.unrecorded) == (6, 2)
    assert "2 more servers of this run left no record" in render_html(report)
    # A run whose every server has its record says nothing of the kind.
    complete = build_report((row_of(d, f"/r/{i}.json") for i, d in enumerate(FLEET)), generated_at=AT, expected=6)
    assert complete.unrecorded == 0
    assert 'id="unrecorded"' not in render_html(complete)

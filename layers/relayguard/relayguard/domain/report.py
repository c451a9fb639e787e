"""The fleet report (issue 15): one self-contained HTML page of a run's job records.

:func:`row_of` turns one record (``relayguard.record/v1``, domain/evidence.py) into a small row as soon
as it is read, so a report of a large fleet never holds the records themselves; :func:`build_report`
keeps each server's latest row and orders them failures first; :func:`render_html` renders the page
with Jinja2, autoescaped: hostnames, reasons and replies come from servers and inventories and are
untrusted text. The page carries its own CSS and JavaScript (``relayguard/templates/``), loads nothing
from anywhere, and its Content-Security-Policy admits only those two, by hash: should a value ever slip
past the escaping, the browser still runs no script but ours.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from relayguard.domain.bounds import clip_text
from relayguard.domain.evidence import RECORD_SCHEMA
from relayguard.domain.mailreport import SUMMARY_KEYS, summary_text
from relayguard.domain.models import HELD_OUTCOMES, OK_OUTCOMES
from relayguard.domain.notify import severity_of
from relayguard.errors import RecordError

#: Characters of a row's reason on the page; the record keeps the whole text.
REASON_LIMIT = 300
#: Width in pixels of the longest bar of the outcome chart.
CHART_WIDTH = 320
#: Row groups, in the page's default order: what needs an operator first.
GROUPS = ("failure", "held", "ok")
_SEVERITY_RANK = {"critical": 0, "error": 1, "warning": 2, "info": 3}


def group_of(outcome: str) -> str:
    """``failure`` (something went wrong), ``held`` (left as it was by design) or ``ok``; an outcome this
    version does not know is treated as a failure, so it is seen first rather than last."""
    if outcome in OK_OUTCOMES:
        return "ok"
    if outcome in HELD_OUTCOMES:
        return "held"
    return "failure"


@dataclass(frozen=True)
class Row:
    """One server's line of the report, from its latest record in the run."""

    server: str
    outcome: str
    reason: str
    severity: str
    generation: str
    exposed_before: bool | None
    exposed_after: bool | None
    restarted: bool
    mode: str
    run_id: str
    recorded_at: str
    #: Where the whole record is (a file or ``s3://`` location), "" when the reader did not say.
    record: str = ""
    #: The ``summary`` counts of the result's deliverability scan (issue 20, domain/mailreport.py), in
    #: ``SUMMARY_KEYS`` order; None when the job made no scan.
    deliverability: tuple[tuple[str, int], ...] | None = None

    @property
    def group(self) -> str:
        return group_of(self.outcome)

    @property
    def deliverability_text(self) -> str:
        """``12 domains: 3 breaking receiver rules, 2 without DMARC``; "" without a scan."""
        return summary_text(dict(self.deliverability)) if self.deliverability is not None else ""

    @property
    def deliverability_failing(self) -> int:
        """Domains breaking a receiver rule (-1 without a scan), the column's sort key."""
        return dict(self.deliverability).get("failing", 0) if self.deliverability is not None else -1

    @property
    def rank(self) -> int:
        """The default order's key: failures, then held, then ok; within each, the most severe first."""
        return GROUPS.index(self.group) * 10 + _SEVERITY_RANK.get(self.severity, 0)


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _summary(value: Any) -> tuple[tuple[str, int], ...] | None:
    """The ``summary`` of a result's ``deliverability`` (``{"summary": {"domains": 12, "failing": 3, ...}}``)."""
    if not isinstance(value, Mapping) or not isinstance(value.get("summary"), Mapping):
        return None
    summary = value["summary"]
    return tuple((key, int(summary.get(key) or 0)) for key in SUMMARY_KEYS)


def row_of(document: Mapping[str, Any], location: str = "") -> Row:
    """The report row of one job record; :class:`RecordError` for a document that is no record."""
    if document.get("schema") != RECORD_SCHEMA or not isinstance(document.get("result"), Mapping):
        raise RecordError(f"{location or 'document'}: not a {RECORD_SCHEMA} record")
    result = document["result"]
    outcome = str(result.get("outcome", ""))
    reason = str(result.get("reason") or "")
    return Row(
        server=str(document.get("server") or result.get("host", "")),
        outcome=outcome,
        reason=clip_text(reason, REASON_LIMIT),
        severity=severity_of(outcome, reason),
        generation=str(result.get("generation") or ""),
        exposed_before=_flag(result.get("exposed_before")),
        exposed_after=_flag(result.get("exposed_after")),
        restarted=bool(result.get("restarted")),
        mode=str(result.get("mode") or ""),
        run_id=str(document.get("run_id") or ""),
        recorded_at=str(document.get("recorded_at") or ""),
        record=location,
        deliverability=_summary(result.get("deliverability")),
    )


@dataclass(frozen=True)
class Bar:
    """One bar of the outcome chart: geometry computed here, so the page needs no script to draw it."""

    outcome: str
    count: int
    group: str
    y: int
    width: int


@dataclass(frozen=True)
class FleetReport:
    """What the page shows: summary counts, the chart and the rows in their default order."""

    title: str
    runs: tuple[str, ...]
    generated_at: str
    rows: tuple[Row, ...]
    #: Outcome → servers, failures first.
    counts: tuple[tuple[str, int], ...]
    #: Records of a server replaced by a later record of the same server (a redelivered job).
    superseded: int = 0
    #: Deliverability summary counts added up over the servers with a scan (empty: no server has one).
    deliverability: tuple[tuple[str, int], ...] = ()
    bars: tuple[Bar, ...] = field(default=())
    #: Servers the run counted that have no record here: their jobs never finished (dead-lettered or
    #: lost), and the planner closed the run past its deadline counting them failed.
    unrecorded: int = 0

    @property
    def total(self) -> int:
        return len(self.rows)

    @property
    def failed(self) -> int:
        return sum(1 for row in self.rows if row.group == "failure")

    @property
    def exposed_before(self) -> int:
        return sum(1 for row in self.rows if row.exposed_before)

    @property
    def exposed_after(self) -> int:
        return sum(1 for row in self.rows if row.exposed_after)

    @property
    def restarted(self) -> int:
        return sum(1 for row in self.rows if row.restarted)

    @property
    def deliverability_servers(self) -> int:
        return sum(1 for row in self.rows if row.deliverability is not None)

    @property
    def has_deliverability(self) -> bool:
        return self.deliverability_servers > 0

    @property
    def deliverability_text(self) -> str:
        return summary_text(dict(self.deliverability)) if self.deliverability else ""


#: Height in pixels of one bar of the chart, gap included.
BAR_STEP = 22


def build_report(rows: Iterable[Row], *, generated_at: str, title: str = "", expected: int | None = None
                 ) -> FleetReport:
    """The report of ``rows``: each server's latest row (by ``recorded_at``), failures first, then
    servers left as they were, then the ones that are fine; the most severe first, then by name.
    ``expected``: how many servers the run counted (its digest's total), so the page can say how many
    of them left no record."""
    latest: dict[str, Row] = {}
    seen = 0
    for row in rows:
        seen += 1
        kept = latest.get(row.server)
        if kept is None or row.recorded_at > kept.recorded_at:
            latest[row.server] = row
    ordered = tuple(sorted(latest.values(), key=lambda r: (r.rank, r.server)))
    tally = Counter(row.outcome for row in ordered)
    counts = tuple(sorted(tally.items(), key=lambda item: (GROUPS.index(group_of(item[0])), -item[1], item[0])))
    most = max(tally.values(), default=1)
    bars = tuple(Bar(outcome, n, group_of(outcome), i * BAR_STEP, max(2, round(CHART_WIDTH * n / most)))
                 for i, (outcome, n) in enumerate(counts))
    summed: Counter[str] = Counter()
    for row in ordered:
        summed.update(dict(row.deliverability or ()))
    deliverability = tuple((key, summed[key]) for key in SUMMARY_KEYS) if any(
        row.deliverability is not None for row in ordered) else ()
    runs = tuple(sorted({row.run_id for row in ordered if row.run_id}))
    if not title:
        title = f"RelayGuard fleet report: run {runs[0]}" if len(runs) == 1 else (
            f"RelayGuard fleet report: {len(runs)} runs" if runs else "RelayGuard fleet report")
    return FleetReport(title=title, runs=runs, generated_at=generated_at, rows=ordered, counts=counts,
                       superseded=seen - len(ordered), deliverability=deliverability, bars=bars,
                       unrecorded=max(0, expected - len(ordered)) if expected is not None else 0)


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@functools.cache
def _page() -> tuple[Any, str, str]:
    """The compiled template and the page's own CSS and script (read once per process)."""
    # Deferred: only the report command and a run's last job render a page; other cold starts skip Jinja2.
    from jinja2 import Environment, PackageLoader, StrictUndefined  # noqa: PLC0415

    env = Environment(loader=PackageLoader("relayguard", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    files = resources.files("relayguard").joinpath("templates")
    return (env.get_template("report.html.j2"), files.joinpath("report.css").read_text(),
            files.joinpath("report.js").read_text())


def exposure_text(before: bool | None, after: bool | None) -> str:
    """``yes → no`` for a job that changed exposure, ``yes`` for one that only saw it, ``-`` when unknown."""
    if before is None:
        return "-"
    text = "yes" if before else "no"
    return text if after is None else f"{text} → {'yes' if after else 'no'}"


def render_html(report: FleetReport) -> str:
    """The self-contained page of ``report`` (UTF-8 text)."""
    template, css, script = _page()
    # Markup: the page's own files go in as they are; everything else is escaped by the environment.
    from markupsafe import Markup  # noqa: PLC0415 - deferred with Jinja2

    csp = (f"default-src 'none'; style-src {_csp_hash(css)}; script-src {_csp_hash(script)}; "
           "base-uri 'none'; form-action 'none'")
    return str(template.render(report=report, css=Markup(css), script=Markup(script),  # noqa: S704
                               csp=csp, exposure_text=exposure_text, chart_width=CHART_WIDTH))

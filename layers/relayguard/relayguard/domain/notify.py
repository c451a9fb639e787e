"""What to announce, and how a notification looks (schema ``relayguard.notification/v1``).

Pure functions: the worker asks :func:`change_of` whether a result is news, and builds messages with
:func:`server_message` and :func:`digest_message`, which check every message against the JSON schema
``relayguard/schemas/notification.v1.json`` (``docs/schemas/notification.v1.json`` is a link to it)
before handing it out: a message that breaks the published contract is a bug and is never sent.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from relayguard.domain.bounds import bounded_deliverability, clip_item, clip_text, first_items
from relayguard.domain.mailreport import SUMMARY_KEYS, summary_text
from relayguard.domain.mailreport import digest_text as mail_digest_text
from relayguard.domain.models import FAILURE_OUTCOMES, OK_OUTCOMES, Outcome
from relayguard.domain.schema import Validator
from relayguard.domain.signals import signals_text
from relayguard.errors import RelayGuardError

SCHEMA = "relayguard.notification/v1"
SCHEMA_RESOURCE = "schemas/notification.v1.json"
# Read at import so that a layer built without the schema fails on import, not on the first message.
NOTIFICATION_SCHEMA: dict[str, Any] = json.loads(resources.files("relayguard").joinpath(SCHEMA_RESOURCE).read_text())
_VALIDATOR = Validator(NOTIFICATION_SCHEMA)


class InvalidNotification(RelayGuardError):
    """A message that does not follow relayguard.notification/v1 (a bug in RelayGuard)."""


def check_notification(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` if it follows the notification schema; otherwise :class:`InvalidNotification` naming each problem."""
    errors = _VALIDATOR.errors(doc)
    if errors:
        raise InvalidNotification(f"{SCHEMA} violated: " + "; ".join(errors))
    return doc

#: Outcome → severity (documented in docs/operations.md).
SEVERITY: dict[str, str] = {
    Outcome.COMPLIANT: "info",
    Outcome.REMEDIATED: "info",
    Outcome.NOT_CPANEL: "info",
    Outcome.NONCOMPLIANT: "warning",
    Outcome.UNREACHABLE: "warning",
    Outcome.TIMEOUT: "warning",
    Outcome.HOST_KEY_UNKNOWN: "warning",
    Outcome.FAILED: "critical",
    Outcome.HOST_KEY_MISMATCH: "critical",
    Outcome.AUTH_FAILED: "critical",
    Outcome.PERMISSION_DENIED: "critical",
    Outcome.SKIPPED: "warning",
    Outcome.EXCLUDED: "info",
    Outcome.REVERTED: "warning",
}
#: Failure reasons reported at ``error`` rather than the ``critical`` of ``failed`` (documented in
#: docs/operations.md, Failure reason → severity): the gate is closed and relaying without AUTH is not
#: proven open, but the post-fix proof found something customers notice, or could not prove refusal.
REASON_SEVERITY: dict[str, str] = {
    "auth-submission-broken": "error",
    "alwaysrelay-broken": "error",
    "relay-probe-deferred": "error",
}
#: ``error`` is a run's own trouble (stopped by its error budget or a failed canary), between a server's
#: warning and a server's critical failure.
_RANK = {"info": 0, "warning": 1, "error": 2, "critical": 3}
#: Outcomes a digest counts as failures.
FAILURES = FAILURE_OUTCOMES


def announced_status(outcome: str, reason: str) -> str:
    """What a notification said about a server, as remembered for change detection."""
    if outcome in OK_OUTCOMES:
        return "ok"
    if outcome in (Outcome.NONCOMPLIANT, Outcome.SKIPPED):
        return "noncompliant"  # a skipped server is exposed and left so, like an audited one
    if outcome == Outcome.FAILED and reason:
        # Reasons start with a stable code ("whmapi1-refused: <text>"); the text may vary between runs.
        return f"failed:{reason.split(':', 1)[0]}"
    return str(outcome)


#: Outcomes whose announcement does not depend on what was announced before.
_ALWAYS: dict[str, str | None] = {Outcome.EXCLUDED: None, Outcome.REVERTED: "reverted"}


def change_of(previous_announced: str | None, outcome: str, reason: str) -> str | None:
    """The change to announce (remediated, failed, noncompliant, recovered, reverted) or None when nothing is
    news.

    ``previous_announced`` is what the last notification said (None: never announced; treated as ok).
    An ``excluded`` server is never news: an operator chose to leave it out, and the digest counts it.
    """
    before = previous_announced or "ok"
    now = announced_status(outcome, reason)
    if outcome in _ALWAYS:
        return _ALWAYS[outcome]
    if outcome == Outcome.REMEDIATED:
        # A fix after an announced problem closes that story: one "recovered" message, not two.
        return "remediated" if before == "ok" else "recovered"
    if now == before:
        return None
    if now == "ok":
        return "recovered"
    if now == "noncompliant":
        return "noncompliant"
    return "failed"


def severity_of(outcome: str, reason: str = "") -> str:
    """The notification severity of an outcome, or of a ``failed`` reason listed in :data:`REASON_SEVERITY`
    (its stable code, before any ``:``); an unknown outcome is critical."""
    if outcome == Outcome.FAILED and reason.split(":", 1)[0] in REASON_SEVERITY:
        return REASON_SEVERITY[reason.split(":", 1)[0]]
    return SEVERITY.get(outcome, "critical")


#: SNS refuses a publish over 256 KiB, message attributes included: the ``MessageStructure=json`` body of
#: any message stays within this many bytes, which leaves 16 KiB for the subject and the attributes.
MESSAGE_BUDGET = 240 * 1024
#: A server-result message lists at most this many affected mailboxes and warnings, each at most
#: ``domain.bounds.ITEM_LIMIT`` characters; ``affected_mailboxes_total`` counts every mailbox.
NOTIFY_LIST_LIMIT = 20
#: Characters of ``reason`` and of the relay probe's ``reply`` in a message.
NOTIFY_TEXT_LIMIT = 1000
#: The lists' lengths tried in turn until the message fits :data:`MESSAGE_BUDGET` (domain.bounds' rules
#: make the first fit for any ordinary text; the last, no lists at all, fits whatever the characters).
_LIST_STEPS = (NOTIFY_LIST_LIMIT, 5, 0)


def sns_payload(doc: dict[str, Any], text: str) -> str:
    """The ``MessageStructure=json`` body: text for email, the JSON document for every other protocol.

    UTF-8 as it is (``ensure_ascii=False``): an escaped non-ASCII character would cost up to 14 bytes
    after the second encoding instead of at most 4, and SNS counts bytes."""
    document = json.dumps(doc, sort_keys=True, ensure_ascii=False)
    return json.dumps({"default": document, "email": text, "email-json": document, "sqs": document,
                       "lambda": document, "https": document}, ensure_ascii=False)


def payload_size(doc: dict[str, Any], text: str) -> int:
    """Bytes SNS counts for the message body of ``doc`` and ``text``."""
    return len(sns_payload(doc, text).encode())


def server_message(result: dict[str, Any], change: str, run_id: str, trigger: str, at: str, *,
                   record: str | None = None) -> dict[str, Any]:
    """The per-server notification document, from a result record (``ServerResult.to_json()``, whole or a
    bounded view), bounded to fit one SNS message (:data:`MESSAGE_BUDGET`) for any fleet: lists cut to
    their first entries with ``affected_mailboxes_total`` counting all, and ``record``, where the whole
    result is (None: not recorded)."""
    mailboxes = list(result["affected_mailboxes"])
    total = int(result.get("affected_mailboxes_total", len(mailboxes)))
    probe = result["relay_probe"]
    reply = probe.get("reply")
    for keep in _LIST_STEPS:
        doc = check_notification({
            "schema": SCHEMA,
            "event": "server-result",
            "change": change,
            "run_id": run_id,
            "trigger": trigger,
            "mode": result["mode"],
            "at": at,
            "server": result["host"],
            "outcome": result["outcome"],
            "reason": clip_text(result["reason"], NOTIFY_TEXT_LIMIT),
            "severity": "info" if change == "recovered" else severity_of(result["outcome"], result["reason"]),
            "generation": result["generation"],
            "exposed_before": result["exposed_before"],
            "exposed_after": result["exposed_after"],
            "restarted": result["restarted"],
            "warnings": first_items(result["warnings"], keep),
            "affected_mailboxes": first_items(mailboxes, keep),
            "affected_mailboxes_total": total,
            "relay_probe": {"ip": probe.get("ip"), "code": probe.get("code"),
                            "reply": clip_text(reply, NOTIFY_TEXT_LIMIT) if isinstance(reply, str) else reply},
            "record": record,
            # A record stored before these fields existed has neither: an empty plan, unmeasured signals.
            # Both are small (a few short lines, a few numbers) and need no bounding.
            "plan": list(result.get("plan") or []),
            "signals": result.get("signals"),
            # Counts only (a few integers): the domains themselves go in a server-deliverability message.
            "deliverability": mail_summary(result.get("deliverability")),
        })
        if payload_size(doc, server_text(doc)) <= MESSAGE_BUDGET:
            break
    return doc


def mail_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The deliverability counts a message carries: ``{judged, total_domains, truncated, summary}``; None
    when the server has no deliverability scan (or a record from before it existed)."""
    if not report:
        return None
    return {"judged": bool(report.get("judged")), "total_domains": int(report.get("total_domains") or 0),
            "truncated": bool(report.get("truncated")),
            "summary": {k: int((report.get("summary") or {}).get(k, 0)) for k in SUMMARY_KEYS}}


def mail_change(previous: str, result: dict[str, Any]) -> str | None:
    """The deliverability news of a result: its summary line when it differs from the one last announced
    (``previous``; "" for never), else None. A judged server is news the first time only if something fails;
    an unjudged scan (no resolver, a DNS outage) is never news, so an outage does not flap the messages."""
    report = result.get("deliverability")
    if not report or not report.get("judged"):
        return None
    summary = report.get("summary") or {}
    text = summary_text(summary)
    if text == previous or (not previous and not summary.get("failing")):
        return None
    return text


def deliverability_message(result: dict[str, Any], run_id: str, trigger: str, at: str, *,
                           record: str | None = None) -> dict[str, Any]:
    """A server's deliverability findings (event ``server-deliverability``, attribute ``finding`` =
    ``deliverability``): the counts, the notes and the first domains breaking a receiver rule, each with its
    check statuses, bounded like a server result (:data:`NOTIFY_LIST_LIMIT` items, then fewer until it fits)."""
    report = result["deliverability"]
    summary = mail_summary(report) or {}
    failing = [d for d in report.get("domains") or [] if d.get("rules_broken")]
    for keep in _LIST_STEPS:
        shown = bounded_deliverability({"domains": failing}, keep)["domains"]
        doc = check_notification({
            "schema": SCHEMA,
            "event": DELIVERABILITY_EVENT,
            "run_id": run_id,
            "trigger": trigger,
            "mode": result["mode"],
            "at": at,
            "server": result["host"],
            "outcome": "failing" if summary["summary"]["failing"] else "ok",
            "severity": "warning" if summary["summary"]["failing"] else "info",
            **summary,
            "notes": first_items(list(report.get("notes") or []), keep),
            "domains": [{"domain": clip_item(d["domain"]), "sending_ip": d.get("sending_ip", ""),
                         "rules_broken": first_items(list(d.get("rules_broken") or []), NOTIFY_LIST_LIMIT),
                         "checks": {k: str(v.get("status", "")) for k, v in (d.get("checks") or {}).items()}}
                        for d in shown],
            "failing_total": len(failing),
            "record": record,
        })
        if payload_size(doc, deliverability_text(doc)) <= MESSAGE_BUDGET:
            break
    return doc


def deliverability_text(doc: dict[str, Any]) -> str:
    """The plain-text body of a server-deliverability notification."""
    lines = [f"RelayGuard: {doc['server']} deliverability: {summary_text(doc['summary'])}", "",
             f"Mode: {doc['mode']} (trigger: {doc['trigger']}, run {doc['run_id']})"]
    if doc["notes"]:
        lines.append("Notes: " + "; ".join(doc["notes"]))
    if doc["domains"]:
        lines += ["", "Domains breaking a receiver rule (docs/deliverability.md):"]
        lines += [f"  - {d['domain']} ({d['sending_ip']}): {', '.join(d['rules_broken'])}; "
                  + ", ".join(f"{k} {v}" for k, v in d["checks"].items()) for d in doc["domains"]]
        if doc["failing_total"] > len(doc["domains"]):
            lines.append(f"  ... and {doc['failing_total'] - len(doc['domains'])} more, listed in the record")
    if doc.get("record"):
        lines += ["", f"Full record: {doc['record']}"]
    return "\n".join(lines) + "\n"


#: The event of a server's deliverability findings: apart from relay results, so subscribers can filter.
DELIVERABILITY_EVENT = "server-deliverability"
#: A run-stopped message, and the digest of a stopped run, are at least this severe.
STOPPED_SEVERITY = "error"


def digest_message(run_id: str, *, mode: str, trigger: str, total: int, counts: dict[str, int],
                   started_at: str, at: str, stopped: str = "", mail: dict[str, int] | None = None,
                   report: str | None = None) -> dict[str, Any]:
    """The run-digest notification document: counts per outcome, the worst severity, an overall outcome,
    ``stopped``: why the run stopped starting fixes (``error-budget``, ``canary-failed``), or null,
    ``deliverability``: the run's deliverability summary added up over its servers (``servers``: how many
    were judged), or null when none was, and ``report``: where the run's fleet report page is
    (``s3://bucket/reports/<run_id>.html``), or null."""
    failed = sum(n for outcome, n in counts.items() if outcome in FAILURES)
    severities = [severity_of(o) for o, n in counts.items() if n] + ([STOPPED_SEVERITY] if stopped else [])
    worst = max(severities, key=_RANK.__getitem__, default="info")
    return check_notification({
        "schema": SCHEMA,
        "event": "run-digest",
        "run_id": run_id,
        "trigger": trigger,
        "mode": mode,
        "at": at,
        "started_at": started_at,
        "severity": worst,
        "outcome": "failed" if failed else ("noncompliant" if counts.get(Outcome.NONCOMPLIANT) else "ok"),
        "total": total,
        "counts": {k: v for k, v in sorted(counts.items()) if v},
        "failed": failed,
        "stopped": stopped or None,
        "deliverability": _run_mail(mail),
        "report": report,
    })


def _run_mail(mail: dict[str, int] | None) -> dict[str, int] | None:
    if not mail or not mail.get("servers"):
        return None
    return {"servers": int(mail["servers"]), **{k: int(mail.get(k, 0)) for k in SUMMARY_KEYS}}


def run_stopped_message(run_id: str, *, mode: str, trigger: str, reason: str, total: int, fixes: dict[str, int],
                        limits: dict[str, Any], at: str) -> dict[str, Any]:
    """The one message that says a run stopped starting fixes, and why (``reason``: ``error-budget`` or
    ``canary-failed``); ``fixes`` are the run's fix counters then, ``limits`` its rollout limits."""
    return check_notification({
        "schema": SCHEMA,
        "event": "run-stopped",
        "run_id": run_id,
        "trigger": trigger,
        "mode": mode,
        "at": at,
        "severity": STOPPED_SEVERITY,
        "outcome": "stopped",
        "reason": reason,
        "total": total,
        "fixes": fixes,
        "limits": limits,
    })


#: A labelled fact of a notification: ("Exim restarted", "yes"). Email (plain text, ``Label: value``) and
#: chat (``domain.chat``, markdown) render the same list, so both carry the same facts in the same order.
Fact = tuple[str, str]


def run_stopped_why(doc: dict[str, Any]) -> str:
    """Why a run stopped starting fixes, in words."""
    fixes, limits = doc["fixes"], doc["limits"]
    reasons = {"error-budget": f"{fixes['failed']} fixes failed, the error budget is {limits['max_errors']}",
               "canary-failed": f"a canary fix failed (canary of {limits['canary']})"}
    return reasons.get(doc["reason"], str(doc["reason"]))


def run_stopped_facts(doc: dict[str, Any]) -> list[Fact]:
    """The labelled facts of a run-stopped notification."""
    fixes = doc["fixes"]
    return [
        ("Why", run_stopped_why(doc)),
        ("Fixes started / finished / failed", f"{fixes['started']} / {fixes['finished']} / {fixes['failed']}"),
        ("Servers in the run", str(doc["total"])),
        ("The rest", f"exposed servers are reported skipped ({doc['reason']}) and left untouched"),
    ]


def run_stopped_headline(doc: dict[str, Any]) -> str:
    return f"RelayGuard run {doc['run_id']} ({doc['trigger']}, {doc['mode']}) STOPPED starting fixes"


def run_stopped_text(doc: dict[str, Any]) -> str:
    """The plain-text body of a run-stopped notification: its headline, then the same facts as chat."""
    return "\n".join([f"{run_stopped_headline(doc)}: {run_stopped_why(doc)}.", "",
                      *(f"{label}: {value}" for label, value in run_stopped_facts(doc)),
                      "", "See docs/operations.md, Rolling out fix mode."]) + "\n"


def _yes_no(flag: bool | None) -> str:
    """A probe's answer for people: ``unknown`` when the probe never got that far (None)."""
    return "unknown" if flag is None else ("yes" if flag else "no")


def server_facts(doc: dict[str, Any]) -> list[Fact]:
    """The labelled facts of a server-result notification, in reading order (mailboxes and the record are
    listed after them by each renderer)."""
    facts: list[Fact] = [
        ("Mode", f"{doc['mode']} (trigger: {doc['trigger']}, run {doc['run_id']})"),
        ("cPanel generation", doc["generation"] or "unknown"),
        ("Exposed before/after", f"{_yes_no(doc['exposed_before'])} / {_yes_no(doc['exposed_after'])}"),
        ("Exim restarted", "yes" if doc["restarted"] else "no"),
    ]
    probe = doc.get("relay_probe") or {}
    if probe.get("code"):
        facts.append((f"Relay probe from {probe.get('ip')}", str(probe.get("reply"))))
    if doc["warnings"]:
        facts.append(("Warnings", ", ".join(doc["warnings"])))
    if doc.get("plan"):
        facts.append(("A fix would run" if doc["mode"] == "audit" else "Planned steps", "; ".join(doc["plan"])))
    if doc.get("signals"):
        facts.append(("Spam signals", signals_text(doc["signals"])))
    if doc.get("deliverability"):
        facts.append(("Deliverability", summary_text(doc["deliverability"]["summary"])))
    return facts


def server_headline(doc: dict[str, Any]) -> str:
    """``RelayGuard: web1 failed (failed, exim-restart-failed)``: the email's first line, the chat title."""
    reason = f", {doc['reason']}" if doc["reason"] else ""
    return f"RelayGuard: {doc['server']} {doc['change']} ({doc['outcome']}{reason})"


#: What a server-result message asks support to do with the affected mailboxes.
MAILBOX_ASK = "These mailboxes relied on POP-before-SMTP; ask their owners to enable SMTP authentication:"


def server_text(doc: dict[str, Any]) -> str:
    """The plain-text body of a server-result notification (e-mail subscribers read this)."""
    lines = [server_headline(doc), "", *(f"{label}: {value}" for label, value in server_facts(doc))]
    shown, total = doc["affected_mailboxes"], doc.get("affected_mailboxes_total", len(doc["affected_mailboxes"]))
    if total:
        lines += ["", MAILBOX_ASK, *(f"  - {m}" for m in shown)]
        if total > len(shown):
            lines.append(f"  ... and {total - len(shown)} more, listed in the record")
    if doc.get("record"):
        lines += ["", f"Full record: {doc['record']}"]
    return "\n".join(lines) + "\n"


def digest_headline(doc: dict[str, Any]) -> str:
    """The one line that sums up a run: every count, failures and a stop."""
    counts = ", ".join(f"{k}: {v}" for k, v in doc["counts"].items()) or "no servers"
    stopped = f"; STOPPED: {doc['stopped']}" if doc.get("stopped") else ""
    return (f"RelayGuard run {doc['run_id']} ({doc['trigger']}, {doc['mode']}): {doc['total']} servers; {counts}; "
            f"failed: {doc['failed']}{stopped}")


def digest_facts(doc: dict[str, Any]) -> list[Fact]:
    """The labelled facts of a run digest."""
    facts: list[Fact] = [
        ("Outcome", f"{doc['outcome']} (severity {doc['severity']})"),
        ("Servers", str(doc["total"])),
        ("By outcome", ", ".join(f"{outcome} {n}" for outcome, n in doc["counts"].items()) or "none"),
        ("Failed", str(doc["failed"])),
        ("Started / finished", f"{doc['started_at']} / {doc['at']}"),
    ]
    if doc.get("stopped"):
        facts.append(("Stopped starting fixes", str(doc["stopped"])))
    if doc.get("deliverability"):
        mail = doc["deliverability"]
        facts.append(("Deliverability", mail_digest_text(mail, mail["servers"])))
    if doc.get("report"):
        facts.append(("Fleet report", str(doc["report"])))
    return facts


def digest_text(doc: dict[str, Any]) -> str:
    """The plain-text body of a run-digest notification: its headline, then the same facts as chat."""
    return "\n".join([digest_headline(doc), "", *(f"{label}: {value}" for label, value in digest_facts(doc))]) + "\n"


def attributes(doc: dict[str, Any]) -> dict[str, str]:
    """The SNS message attributes subscribers filter on (docs/deploy.md, Subscribing to notifications)."""
    return {
        "event": doc["event"],
        "outcome": str(doc["outcome"]),
        "severity": doc["severity"],
        "server": doc.get("server", "*"),
        "mode": doc["mode"],
        # Deliverability findings go apart from relay results: a pager filters on finding=relay.
        "finding": "deliverability" if doc["event"] == DELIVERABILITY_EVENT else "relay",
    }

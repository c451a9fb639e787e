"""Chat-ready notifications: each notification as an AWS Chatbot custom notification.

AWS Chatbot (Amazon Q Developer in chat applications) forwards a message of an SNS topic to Slack or
Microsoft Teams only when the message body is a custom notification (``version`` 1.0, ``source``
custom, ``content`` with a markdown ``title`` and ``description``); anything else it drops. The stack
publishes this variant to its chat topic (template parameter ``ChatNotifications``; docs/deploy.md).

Pure: :func:`chat_message` turns a ``relayguard.notification/v1`` document (already checked) into the
chat message and checks it against ``relayguard/schemas/chatbot-custom-notification.v1.json``. The
description lists the same labelled facts as the email text (``domain.notify``'s ``*_facts``), one per
line, so chat and email never say different things.

Every value that came from a server or an inventory (host names, SMTP replies, reasons, mailboxes) is
untrusted text: ``&``, ``<`` and ``>`` are escaped, so a reply such as ``<!channel>`` or
``<https://evil|click>`` cannot mention a channel or plant a link in Slack, and it is shown as code.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from relayguard.domain.bounds import clip_item
from relayguard.domain.mailreport import summary_text
from relayguard.domain.models import Outcome
from relayguard.domain.notify import (
    MAILBOX_ASK,
    Fact,
    digest_facts,
    run_stopped_facts,
    run_stopped_headline,
    server_facts,
    server_headline,
)
from relayguard.domain.schema import Validator
from relayguard.errors import RelayGuardError

CHAT_SCHEMA_RESOURCE = "schemas/chatbot-custom-notification.v1.json"
CHAT_SCHEMA: dict[str, Any] = json.loads(resources.files("relayguard").joinpath(CHAT_SCHEMA_RESOURCE).read_text())
_VALIDATOR = Validator(CHAT_SCHEMA)
_CONTENT = CHAT_SCHEMA["properties"]["content"]["properties"]
_METADATA = CHAT_SCHEMA["properties"]["metadata"]["properties"]
#: The schema's limits, read from it so that the two cannot drift apart.
TITLE_LIMIT: int = _CONTENT["title"]["maxLength"]
DESCRIPTION_LIMIT: int = _CONTENT["description"]["maxLength"]
STEP_LIMIT: int = _CONTENT["nextSteps"]["items"]["maxLength"]
SUMMARY_LIMIT: int = _METADATA["summary"]["maxLength"]
CONTEXT_LIMIT: int = _METADATA["additionalContext"]["additionalProperties"]["maxLength"]
#: Characters of one fact's value in chat (an SMTP reply may have 1000 in the notification).
VALUE_LIMIT = 300
#: Mailboxes named in a chat message; the rest are counted (the email and the record list more).
CHAT_MAILBOXES = 5

#: Severity → the emoji that leads the title: colour is what a channel is scanned by.
SEVERITY_EMOJI = {"info": ":large_green_circle:", "warning": ":warning:", "error": ":red_circle:",
                  "critical": ":rotating_light:"}

OPERATIONS = "docs/operations.md"


class InvalidChatMessage(RelayGuardError):
    """A chat message that does not follow the chat schema (a bug in RelayGuard)."""


def check_chat_message(message: dict[str, Any]) -> dict[str, Any]:
    """``message`` if it follows the chat schema; otherwise :class:`InvalidChatMessage` naming each problem."""
    errors = _VALIDATOR.errors(message)
    if errors:
        raise InvalidChatMessage("chatbot custom notification violated: " + "; ".join(errors))
    return message


def escape(text: str) -> str:
    """Untrusted text made inert for chat markdown: Slack's three control characters escaped, as Slack
    documents; Teams renders the same entities as the characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(text: str, limit: int = VALUE_LIMIT) -> str:
    """Untrusted text as inline code: escaped, clipped, and without backticks that would end the span."""
    return f"`{escape(clip_item(text, limit).replace('`', chr(0x2032)))}`"


def _lines(facts: list[Fact]) -> list[str]:
    # Values may carry what a server said (an SMTP reply, a reason): escaped and clipped, never markup.
    return [f"*{escape(label)}:* {escape(clip_item(value, VALUE_LIMIT))}" for label, value in facts]


def _description(lines: list[str]) -> str:
    text = "\n".join(lines)
    if len(text) <= DESCRIPTION_LIMIT:
        return text
    marker = "\n… (cut; the email and the record have it all)"
    return text[: DESCRIPTION_LIMIT - len(marker)].rsplit("\n", 1)[0] + marker


def _server_steps(doc: dict[str, Any]) -> list[str]:
    outcome, reason = doc["outcome"], doc["reason"].split(":", 1)[0]
    steps: list[str] = []
    if doc["change"] in ("recovered", "remediated") and not doc.get("affected_mailboxes_total"):
        return steps
    if outcome == Outcome.NONCOMPLIANT:
        steps.append("Fix it: `relayguard fix HOST`, or a sweep in fix mode (SweepMode=fix)")
    elif outcome == Outcome.SKIPPED:
        steps.append(f"Left unfixed by the run's limits ({reason}): {OPERATIONS}, Rolling out fix mode")
    elif outcome in (Outcome.HOST_KEY_MISMATCH, Outcome.HOST_KEY_UNKNOWN):
        steps.append(f"Check the host key before pinning it: {OPERATIONS}, Re-pinning a changed host key")
    elif outcome in (Outcome.UNREACHABLE, Outcome.TIMEOUT, Outcome.AUTH_FAILED, Outcome.PERMISSION_DENIED):
        steps.append(f"Check SSH from the worker to the server: {OPERATIONS}, Troubleshooting ({outcome})")
    elif outcome == Outcome.FAILED:
        steps.append(f"Look up `{escape(reason) or 'failed'}` in {OPERATIONS}, Troubleshooting")
    elif outcome == Outcome.REVERTED:
        steps.append("POP-before-SMTP relaying is on again: fix it once the reason for the revert is gone")
    total = doc.get("affected_mailboxes_total", len(doc["affected_mailboxes"]))
    if total:
        steps.append(f"Ask the owners of {total} mailbox(es) to enable SMTP authentication")
    if doc.get("record") and outcome not in (Outcome.COMPLIANT, Outcome.REMEDIATED):
        steps.append(f"Read the whole record: {code(doc['record'], STEP_LIMIT - 40)}")
    return steps


def _server(doc: dict[str, Any]) -> tuple[str, list[str], list[str]]:
    lines = [f"*Server:* {code(doc['server'])}", *_lines(server_facts(doc))]
    shown, total = doc["affected_mailboxes"], doc.get("affected_mailboxes_total", len(doc["affected_mailboxes"]))
    if total:
        named = ", ".join(code(m) for m in shown[:CHAT_MAILBOXES])
        more = f" and {total - min(len(shown), CHAT_MAILBOXES)} more" if total > min(len(shown), CHAT_MAILBOXES) else ""
        lines += ["", f"*{MAILBOX_ASK.rstrip(':')}:* {named}{more}"]
    return server_headline(doc), lines, _server_steps(doc)


def _digest(doc: dict[str, Any]) -> tuple[str, list[str], list[str]]:
    steps = []
    if doc["failed"]:
        steps.append(f"{doc['failed']} server(s) failed in this run; each failure not announced before has its "
                     "own message in this thread")
    if doc.get("stopped"):
        steps.append(f"The run stopped starting fixes ({doc['stopped']}): {OPERATIONS}, Rolling out fix mode")
    if doc["counts"].get(Outcome.NONCOMPLIANT):
        steps.append(f"{doc['counts'][Outcome.NONCOMPLIANT]} server(s) exposed: fix them or run a fix sweep")
    title = (f"RelayGuard run {doc['run_id']}: {doc['outcome']}, {doc['total']} servers, {doc['failed']} failed"
             + (f", STOPPED ({doc['stopped']})" if doc.get("stopped") else ""))
    return title, _lines(digest_facts(doc)), steps


def _stopped(doc: dict[str, Any]) -> tuple[str, list[str], list[str]]:
    steps = [f"Read the failed servers of run {doc['run_id']} before the next fix sweep",
             f"Limits and what to do: {OPERATIONS}, Rolling out fix mode"]
    return run_stopped_headline(doc), _lines(run_stopped_facts(doc)), steps


def _deliverability(doc: dict[str, Any]) -> tuple[str, list[str], list[str]]:
    # The same lines as domain.notify.deliverability_text, the domains as code (they come from the server).
    lines = [f"*Server:* {code(doc['server'])}",
             f"*Mode:* {escape(doc['mode'])} (trigger: {escape(doc['trigger'])}, run {escape(doc['run_id'])})"]
    if doc["notes"]:
        lines.append(f"*Notes:* {escape(clip_item('; '.join(doc['notes']), VALUE_LIMIT))}")
    shown = doc["domains"][:CHAT_MAILBOXES]
    if shown:
        lines += ["", "*Domains breaking a receiver rule:*"]
        lines += [f"- {code(d['domain'])} ({escape(d['sending_ip'])}): {escape(', '.join(d['rules_broken']))}"
                  for d in shown]
        if doc["failing_total"] > len(shown):
            lines.append(f"- and {doc['failing_total'] - len(shown)} more, listed in the record")
    steps = ["What each receiver rule asks: docs/deliverability.md"] if shown else []
    return f"RelayGuard: {doc['server']} deliverability: {summary_text(doc['summary'])}", lines, steps


_RENDERERS = {"server-result": _server, "run-digest": _digest, "run-stopped": _stopped,
              "server-deliverability": _deliverability}


def chat_message(doc: dict[str, Any]) -> dict[str, Any]:
    """The AWS Chatbot custom notification of a ``relayguard.notification/v1`` document, checked against
    the chat schema. One run's messages share a thread (``metadata.threadId``)."""
    event = doc["event"]
    headline, lines, steps = _RENDERERS[event](doc)
    emoji = SEVERITY_EMOJI[doc["severity"]]
    server = doc.get("server")
    ident = ":".join(str(part) for part in ("relayguard", doc["run_id"], event, server, doc.get("change")) if part)
    context = {"run_id": doc["run_id"], "severity": doc["severity"], "outcome": str(doc["outcome"]),
               "mode": doc["mode"], "trigger": doc["trigger"], "at": doc["at"]}
    if server:
        context["server"] = server
    message: dict[str, Any] = {
        "version": "1.0",
        "source": "custom",
        "id": clip_item(ident, 512),
        "content": {
            "textType": "client-markdown",
            "title": clip_item(f"{emoji} {escape(headline)}", TITLE_LIMIT),
            "description": _description(lines),
            "keywords": [clip_item(k, 64) for k in ("RelayGuard", doc["severity"], str(doc["outcome"]), doc["mode"])],
        },
        "metadata": {
            "threadId": clip_item(f"relayguard-run-{doc['run_id']}", 256),
            "summary": clip_item(escape(headline), SUMMARY_LIMIT),
            "eventType": event,
            "additionalContext": {k: clip_item(escape(v), CONTEXT_LIMIT) for k, v in context.items()},
        },
    }
    if steps:
        message["content"]["nextSteps"] = [clip_item(step, STEP_LIMIT) for step in steps[:5]]
    if doc.get("record"):
        message["metadata"]["relatedResources"] = [clip_item(doc["record"], 1024)]
    return check_chat_message(message)

"""The documented bounds on what leaves a job's full record (docs/operations.md, Bounded views).

A job's record (``ServerResult.to_json()``) keeps every value whole: it goes once to the record store
(S3, or ``--record-dir``). Everything else that carries a result has a size limit of its own: a
``--json`` result line, the state table's item (DynamoDB: 400 KB), an SNS message (256 KiB). Those
carry a *bounded view*: the same document with its large fields cut by the rules below, each cut
marked and counted, and the record's location next to it. Nothing is ever cut mid-document.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

#: Characters of each step output stream (and of ``exim_status``) kept in a bounded view.
OUTPUT_LIMIT = 2000
#: Affected mailboxes listed in a result line; ``affected_mailboxes_total`` always counts them all.
MAILBOX_LIMIT = 100
#: Characters of one listed item (254: the longest e-mail address).
ITEM_LIMIT = 254
#: Bytes of the state table's ``result`` (a DynamoDB item holds 400 KB, names and other attributes included).
STATE_BUDGET = 300_000
#: What stands for a field that grows with the server's relay lists (``before``, ``after``, ``revert``) in
#: the state table when the bounded view would not fit it.
OMITTED = {"omitted": "too large for the state table; the record holds it"}
#: Those fields, in the order they are given up (``deliverability`` grows with the server's domains).
_LIST_SIZED = ("deliverability", "before", "after", "revert")
#: Domains of the deliverability scan listed in a bounded view, those breaking a receiver rule first;
#: ``deliverability.domains_total`` counts them all, and the counts and summary always cover every domain.
DOMAIN_LIMIT = 100


def clip_text(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """``text`` if it has at most ``limit`` characters; else its first ``limit`` and a marker with the total."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[relayguard: clipped, first {limit} of {len(text)} characters; the record has all]"


def clip_item(item: str, limit: int = ITEM_LIMIT) -> str:
    """One list item of at most ``limit`` characters; a longer one ends in ``…``."""
    return item if len(item) <= limit else item[: limit - 1] + "…"


def first_items(items: Sequence[str], limit: int, item_limit: int = ITEM_LIMIT) -> list[str]:
    """The first ``limit`` items, each at most ``item_limit`` characters."""
    return [clip_item(item, item_limit) for item in items[:limit]]


def _bounded_step(step: dict[str, Any]) -> dict[str, Any]:
    out = dict(step)
    for stream in ("stdout", "stderr"):
        text = str(step.get(stream) or "")
        if len(text) > OUTPUT_LIMIT:
            out[stream] = clip_text(text)
            out[f"{stream}_total"] = len(text)  # only on a clipped stream: its length in the record
    return out


def _bounded_state(state: Any) -> Any:
    if not isinstance(state, dict) or not isinstance(state.get("exim_status"), str):
        return state
    return {**state, "exim_status": clip_text(state["exim_status"])}


def bounded_result(record: dict[str, Any], location: str | None = None) -> dict[str, Any]:
    """The bounded view of a result record: step output and ``exim_status`` clipped to :data:`OUTPUT_LIMIT`
    characters, the first :data:`MAILBOX_LIMIT` affected mailboxes with ``affected_mailboxes_total``, and
    ``record``: where the full record is (None: nowhere), and the deliverability scan's first
    :data:`DOMAIN_LIMIT` domains. ``before``/``after`` lists stay whole, because
    ``relayguard revert --record`` restores them from a result line."""
    out = copy.deepcopy(record)
    out["steps"] = [_bounded_step(step) for step in record.get("steps") or []]
    mailboxes = list(record.get("affected_mailboxes") or [])
    out["affected_mailboxes"] = first_items(mailboxes, MAILBOX_LIMIT)
    out["affected_mailboxes_total"] = len(mailboxes)
    for side in ("before", "after"):
        if side in out:
            out[side] = _bounded_state(out[side])
    if isinstance(out.get("deliverability"), dict):
        out["deliverability"] = bounded_deliverability(out["deliverability"], DOMAIN_LIMIT)
    out["record"] = location
    return out


def bounded_deliverability(report: dict[str, Any], limit: int) -> dict[str, Any]:
    """The deliverability record with at most ``limit`` domains, those breaking a receiver rule first (then in
    the server's order), and ``domains_total``: how many the record has."""
    domains = list(report.get("domains") or [])
    ranked = sorted(range(len(domains)), key=lambda i: (not domains[i].get("rules_broken"), i))
    return {**report, "domains": [domains[i] for i in ranked[:limit]], "domains_total": len(domains)}


def state_result(bounded: dict[str, Any], budget: int = STATE_BUDGET) -> dict[str, Any]:
    """What the state table keeps of a bounded view: all of it when its JSON fits ``budget`` bytes, else
    the view with ``before``, ``after`` and ``revert`` (the fields that grow with the relay lists) each
    replaced by :data:`OMITTED`. The record's location stays, so the whole is one read away."""
    if len(json.dumps(bounded).encode()) <= budget:
        return bounded
    return {**bounded, **{name: OMITTED for name in _LIST_SIZED if name in bounded}}

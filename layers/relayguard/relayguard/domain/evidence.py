"""A job's durable record (``relayguard.record/v1``): the whole result with the job that produced it, and
the key it is written under once (docs/operations.md, The record of every job)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

RECORD_SCHEMA = "relayguard.record/v1"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def key_part(text: str) -> str:
    """``text`` as one path segment: characters outside ``[A-Za-z0-9._-]`` (``:``, ``/``, ``[``) become
    ``_``, and a leading dot too, so no segment is ``.``, ``..`` or hidden."""
    safe = _UNSAFE.sub("_", text) or "_"
    return "_" + safe[1:] if safe.startswith(".") else safe


def record_document(result: dict[str, Any], *, run_id: str, job_id: str, trigger: str, recorded_at: str,
                    alert_id: str | None = None) -> dict[str, Any]:
    """The record of one job: who ran it and when, and ``result``, the whole ``ServerResult.to_json()``
    (before/after state, every step with its whole output, the plan when there is one, revert commands,
    warnings, every affected mailbox)."""
    return {"schema": RECORD_SCHEMA, "run_id": run_id, "job_id": job_id, "trigger": trigger,
            "alert_id": alert_id, "server": result["host"], "recorded_at": recorded_at, "result": result}


def record_key(document: dict[str, Any]) -> str:
    """``<run_id>/<server>/<UTC time>-<job_id>.json``: by run and server, and one key per write, so a
    redelivered job's second result sits beside its first instead of over it."""
    at = datetime.fromisoformat(document["recorded_at"]).astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{key_part(document['run_id'])}/{key_part(document['server'])}/{at}-{key_part(document['job_id'])}.json"

"""Building blocks of the end-to-end flows: inventory entries of lab hosts, trigger events, received messages.

Shared by tests/e2e-local, the demo and the benchmarks.
"""

from __future__ import annotations

import json
import re
import selectors
import socket
import threading
import uuid
from typing import Any

from harness.aws import Stack
from harness.template import REPO_ROOT
from lab import Host


def entry(host: Host, name: str | None = None, aliases: tuple[str, ...] = ()) -> dict[str, Any]:
    """The inventory entry of a lab host, with its pinned host key."""
    key = (host.dir / "ssh_host_ed25519_key.pub").read_text().split()
    return {"name": name or host.name, "host": host.address, "port": 22, "user": host.user,
            "host_keys": [f"{key[0]} {key[1]}"], "tags": [host.spec.profile],
            "aliases": [host.domain, host.instance_id, *aliases]}


def scheduled_event(detail: dict[str, Any] | None = None, event_id: str | None = None) -> dict[str, Any]:
    """A schedule's event. Each call is a new event (its own id) unless ``event_id`` repeats one: the
    planner opens one run per event id, so a repeated id plays EventBridge's retried delivery."""
    return {"version": "0", "id": event_id or str(uuid.uuid4()), "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2026-12-01T06:00:00Z",
            "region": "eu-west-1", "resources": ["arn:aws:events:eu-west-1:123456789012:rule/relayguard-sweep"],
            "detail": detail or {}}


def spam_alert_event(detail: dict[str, Any]) -> dict[str, Any]:
    return {"version": "0", "id": "0f4c8b1e-5b0e-4f39-9b43-3d1b0c4c1f00", "detail-type": "Spam Alert",
            "source": "relayguard.alerts", "account": "123456789012", "time": "2026-12-01T06:00:00Z",
            "region": "eu-west-1", "resources": [], "detail": detail}


def alert_detail(alert_id: str, **host: str) -> dict[str, Any]:
    return {"schema": "relayguard.alert/v1", "alert_id": alert_id, "source": "csf_rt", "kind": "relay_tracking",
            "observed_at": "2026-12-01T05:59:00Z", "severity": "critical", "host": host,
            "subject": {"ips": ["198.51.100.77"], "relay_type": "POPRELAY"}, "metrics": {"count": 250}}


def notifications(stack: Stack, queue_url: str) -> list[dict[str, Any]]:
    """What a subscriber queue received: (message document, message attributes) per SNS delivery."""
    out = []
    for envelope in stack.received(queue_url):
        attrs = {k: v["Value"] for k, v in (envelope.get("MessageAttributes") or {}).items()}
        out.append({"doc": json.loads(envelope["Message"]), "attributes": attrs, "subject": envelope.get("Subject")})
    return out


class Tarpit:
    """Loopback listeners that accept a connection, say nothing for ``delay`` seconds, then hang up.

    Stand-ins for many slow, unreachable servers (an SSH client gives up on the banner), so a test
    can queue fifty sweep jobs that each take a while without starting fifty lab hosts.
    """

    def __init__(self, addresses: list[str], port: int = 22, delay: float = 0.4) -> None:
        self.delay = delay
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        for address in addresses:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, port))
            s.listen(16)
            s.setblocking(False)
            self._selector.register(s, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                try:
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                except OSError:
                    continue
                threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        self._stop.wait(self.delay)
        conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for key in list(self._selector.get_map().values()):
            self._selector.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()


def documented_filter_policy(heading: str = "### Only failures to a pager") -> dict[str, Any]:
    """The first JSON filter policy under ``heading`` in docs/deploy.md, as an operator would copy it."""
    text = (REPO_ROOT / "docs" / "deploy.md").read_text()
    after = text[text.index(heading + "\n"):]
    match = re.search(r"```json\n(.*?)```", after, re.S)
    if match is None:
        raise KeyError(f"no JSON block under {heading!r} in docs/deploy.md")
    return dict(json.loads(match.group(1)))

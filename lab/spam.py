"""Exim main-log lines of a server that is sending spam, for ``HostSpec.mainlog_lines``.

They are written the way cPanel's Exim writes them (cpanel.md §5, §4): send-limit hits from
cPanel's hourly limits and refused relay attempts with cPanel's ``log_message``. Each line is
stamped ``minutes_ago`` before ``now`` in the machine's local time, which is the lab hosts' clock
(they share the machine's ``/etc/localtime``), so a test can place lines inside or outside
RelayGuard's signal window.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def spam_lines(now: datetime, *, minutes_ago: float = 5, send_limit_hits: int = 0, defer_hits: int = 0,
               relay_rejects: int = 0, domain: str = "shop.example") -> tuple[str, ...]:
    """``send_limit_hits`` "max emails per hour" lines, ``defer_hits`` "max defers and failures per
    hour" lines and ``relay_rejects`` refused relay attempts, all stamped ``now - minutes_ago``."""
    stamp = (now - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"{stamp} 1tAbCd-000{i:03d}-Xy <= spam{i}@{domain} U=shop P=local S=1200 "
             f"Domain {domain} has exceeded the max emails per hour (201/200 (100%)) allowed.  Message discarded."
             for i in range(send_limit_hits)]
    lines += [f"{stamp} Domain {domain} has exceeded the max defers and failures per hour (25/25 (100%)) allowed."
              for _ in range(defer_hits)]
    lines += [f"{stamp} H=(client.example) [203.0.113.{50 + i % 200}]:41{i % 1000:03d} F=<x{i}@spammer.example> "
              f"rejected RCPT <victim{i}@example.net>: Rejected relay attempt: '203.0.113.{50 + i % 200}' "
              f"From: 'x{i}@spammer.example' To: 'victim{i}@example.net'"
              for i in range(relay_rejects)]
    return tuple(lines)

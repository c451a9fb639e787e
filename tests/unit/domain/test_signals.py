"""Spam signals as a result, a text line and per-server metrics report them."""

from __future__ import annotations

from typing import Any

from relayguard.domain.probe import parse_probe
from relayguard.domain.signals import signal_metrics, signals_of, signals_text

from tests.unit.samples import MODERN_COMPLIANT, hx, probe_text

NOISY = {**MODERN_COMPLIANT, "exim.queue.hex": hx("12\n"), "signals.since": "2026-12-01 02:00:00",
         "signals.send_limit": "3", "signals.relay_reject": "0", "signals.partial": "0"}


def test_the_result_field_carries_the_window_and_every_count() -> None:
    assert signals_of(parse_probe(probe_text(NOISY))) == {
        "window_minutes": 60, "since": "2026-12-01 02:00:00", "queue": 12, "send_limit_hits": 3, "relay_rejects": 0,
        "partial": False}


def test_unmeasured_counts_stay_null() -> None:
    signals = signals_of(parse_probe(probe_text({**MODERN_COMPLIANT, "exim.queue.rc": "1"})))
    assert (signals["since"], signals["queue"], signals["send_limit_hits"], signals["relay_rejects"]) == (
        None, None, None, None)


def test_only_measured_nonzero_counts_become_metrics() -> None:
    # GIVEN a queue of 12, 3 send-limit hits and no relay reject  THEN two metrics, the zero left out
    assert signal_metrics(signals_of(parse_probe(probe_text(NOISY)))) == {"QueueSize": 12, "SendLimitHits": 3}


def test_a_quiet_or_unmeasured_server_makes_no_metric() -> None:
    quiet: dict[str, Any] = {"window_minutes": 60, "since": None, "queue": 0, "send_limit_hits": None,
                             "relay_rejects": 0, "partial": False}
    assert (signal_metrics(quiet), signal_metrics({})) == ({}, {})


def test_the_text_line_states_the_window_and_marks_lower_bounds() -> None:
    signals = {**signals_of(parse_probe(probe_text(NOISY))), "partial": True, "send_limit_hits": None}
    assert signals_text(signals) == "queue 12, send-limit hits ?, relay rejects ≥0 in the last 60 min"

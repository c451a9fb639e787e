"""The CLI's in-process rollout gate: the domain's admit() over a shared tally, blocking instead of waiting.

Threads stand in for the CLI's jobs; the tests wait for a thread to block (``gate.waiting``) and then
release it by ending a fix, so every step is an observed state, never a duration.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import pytest
from relayguard.domain.models import Outcome
from relayguard.domain.rollout import Admission, Decision, ErrorBudget, Rollout, SkipReason, Tally
from relayguard.domain.server import Server
from relayguard.fleet import LocalGate

START = Admission(Decision.START)
CANARY = Admission(Decision.START, canary=True)


def servers(*names: str) -> list[Server]:
    return [Server(name=n, host=f"203.0.113.{i}") for i, n in enumerate(names, 1)]


def until(condition: Callable[[], bool]) -> None:
    """Wait until another thread has reached a state; fail the test if it never does."""
    for _ in range(10_000):
        if condition():
            return
        time.sleep(0.001)
    raise AssertionError("the other threads never reached the expected state")


class Asker:
    """Asks the gate on daemon threads, so a gate that never answers fails the test instead of hanging it."""

    def submit(self, admit: Callable[[Server], Admission], server: Server) -> Future[Admission]:
        future: Future[Admission] = Future()

        def ask() -> None:
            future.set_result(admit(server))

        threading.Thread(target=ask, daemon=True).start()
        return future


@pytest.fixture
def pool() -> Asker:
    return Asker()


def test_without_limits_every_fix_starts_at_once() -> None:
    a, b, c = fleet = servers("a", "b", "c")
    gate = LocalGate(Rollout(), fleet)
    assert [gate.admit(s) for s in (c, a, b)] == [START, START, START]
    assert gate.tally == Tally(total=3, started=3)


def test_max_changes_counts_every_started_fix_whatever_its_outcome() -> None:
    a, b, c = fleet = servers("a", "b", "c")
    gate = LocalGate(Rollout(max_changes=2), fleet)
    assert gate.admit(a) == START
    gate.finished(a, Outcome.FAILED)
    assert gate.admit(b) == START
    assert gate.admit(c) == Admission(Decision.SKIP, SkipReason.MAX_CHANGES)
    assert gate.skipped == {"max-changes": 1}
    assert gate.stop_reason() == ""  # reaching max-changes is doing what was asked, not a stop


def test_a_budget_of_one_holds_the_next_fix_while_one_runs_and_skips_it_once_that_fails(
        pool: Asker) -> None:
    # GIVEN a budget of 1 and a running fix
    a, b = fleet = servers("a", "b")
    gate = LocalGate(Rollout(max_errors=ErrorBudget(count=1)), fleet)
    assert gate.admit(a) == START
    # WHEN another server asks
    held = pool.submit(gate.admit, b)
    # THEN it blocks (the running fix might fail and spend the budget) ...
    until(lambda: gate.waiting == 1)
    assert not held.done()
    # ... and once the running fix fails, it is skipped: the gate never answers wait
    gate.finished(a, Outcome.FAILED)
    assert held.result(timeout=30) == Admission(Decision.SKIP, SkipReason.ERROR_BUDGET)
    assert gate.tally == Tally(total=2, started=1, finished=1, failed=1)
    assert gate.stop_reason() == "error-budget"


def test_a_held_fix_starts_once_the_running_one_succeeds(pool: Asker) -> None:
    a, b = fleet = servers("a", "b")
    gate = LocalGate(Rollout(max_errors=ErrorBudget(count=1)), fleet)
    assert gate.admit(a) == START
    held = pool.submit(gate.admit, b)
    until(lambda: gate.waiting == 1)
    gate.finished(a, Outcome.REMEDIATED)
    assert held.result(timeout=30) == START
    assert gate.stop_reason() == ""


def test_with_a_budget_of_two_at_most_two_fixes_run_and_exactly_two_fail(pool: Asker) -> None:
    # GIVEN five servers asking at once under a budget of 2
    fleet = servers("s0", "s1", "s2", "s3", "s4")
    gate = LocalGate(Rollout(max_errors=ErrorBudget(count=2)), fleet)
    asks: dict[str, Future[Admission]] = {s.name: pool.submit(gate.admit, s) for s in fleet}
    # THEN two start and three are held
    until(lambda: gate.waiting == 3)
    started = [s for s in fleet if asks[s.name].done()]
    assert len(started) == 2
    assert all(asks[s.name].result() == START for s in started)
    # WHEN the first running fix fails, one failure plus one running fix still fill the budget
    gate.finished(started[0], Outcome.TIMEOUT)
    until(lambda: gate.waiting == 3)
    assert gate.tally.started == 2
    # WHEN the second fails too, the held three are skipped
    gate.finished(started[1], Outcome.FAILED)
    held = [asks[s.name].result(timeout=30) for s in fleet if s not in started]
    assert held == [Admission(Decision.SKIP, SkipReason.ERROR_BUDGET)] * 3
    assert gate.tally == Tally(total=5, started=2, finished=2, failed=2)
    assert gate.skipped == {"error-budget": 3}


def test_a_percentage_budget_is_taken_of_the_whole_run() -> None:
    fleet = servers(*(f"s{i}" for i in range(10)))
    gate = LocalGate(Rollout(max_errors=ErrorBudget(percent=20)), fleet)
    for server in fleet[:2]:
        assert gate.admit(server) == START  # 20 % of 10 servers: two may run at once
    for server in fleet[:2]:
        gate.finished(server, Outcome.FAILED)
    assert gate.admit(fleet[2]) == Admission(Decision.SKIP, SkipReason.ERROR_BUDGET)


def test_the_canary_is_the_first_exposed_server_in_inventory_order_whoever_asks_first(
        pool: Asker) -> None:
    # GIVEN a canary of 1 over a, b, c, d, where d and c ask before b and a is compliant (never asks)
    a, b, c, d = fleet = servers("a", "b", "c", "d")
    gate = LocalGate(Rollout(canary=1), fleet)
    late_d = pool.submit(gate.admit, d)
    late_c = pool.submit(gate.admit, c)
    until(lambda: gate.waiting == 2)
    # WHEN b asks, it too waits for a, which comes before it
    early_b = pool.submit(gate.admit, b)
    until(lambda: gate.waiting == 3)
    assert [f.done() for f in (late_d, late_c, early_b)] == [False, False, False]
    # WHEN a's job ends without a fix
    gate.job_ended(a)
    # THEN b is the canary, and c and d wait for it to end
    assert early_b.result(timeout=30) == CANARY
    until(lambda: gate.waiting == 2)
    assert [f.done() for f in (late_c, late_d)] == [False, False]
    # WHEN the canary fails THEN the rest of the run is skipped
    gate.finished(b, Outcome.FAILED)
    skipped = Admission(Decision.SKIP, SkipReason.CANARY_FAILED)
    assert (late_c.result(timeout=30), late_d.result(timeout=30)) == (skipped, skipped)
    assert gate.stop_reason() == "canary-failed"


def test_a_good_canary_releases_the_rest_of_the_run(pool: Asker) -> None:
    a, b, c = fleet = servers("a", "b", "c")
    gate = LocalGate(Rollout(canary=2), fleet)
    assert gate.admit(a) == CANARY
    assert gate.admit(b) == CANARY
    rest = pool.submit(gate.admit, c)
    until(lambda: gate.waiting == 1)
    gate.finished(a, Outcome.REMEDIATED)
    until(lambda: gate.waiting == 1)  # one canary still running
    assert not rest.done()
    gate.finished(b, Outcome.REMEDIATED)
    assert rest.result(timeout=30) == START


def test_a_server_not_in_the_run_is_not_held_for_order() -> None:
    gate = LocalGate(Rollout(canary=1), servers("a", "b"))
    assert gate.admit(Server(name="elsewhere", host="198.51.100.1")) == CANARY

"""The rollout policy with plain data: admission under limits, budget, canary; exclusions; the window."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from relayguard.domain.rollout import (
    Admission,
    Decision,
    ErrorBudget,
    MaintenanceWindow,
    Rollout,
    SkipReason,
    Tally,
    admit,
    excluded,
    stop_reason,
)
from relayguard.errors import InvalidInput

START = Admission(Decision.START)
WAIT = Admission(Decision.WAIT)


def skip(reason: SkipReason) -> Admission:
    return Admission(Decision.SKIP, reason)


def test_without_limits_every_fix_starts_at_once():
    assert admit(Rollout(), Tally(total=50, started=49, finished=3, failed=3)) == START


@pytest.mark.parametrize(("text", "budget", "limit_of_20"), [
    ("2", ErrorBudget(count=2), 2), ("10%", ErrorBudget(percent=10), 2), ("1%", ErrorBudget(percent=1), 1),
    (" 25 % ", ErrorBudget(percent=25), 5), ("100%", ErrorBudget(percent=100), 20),
])
def test_error_budgets_parse_as_counts_or_percentages_of_the_run(text, budget, limit_of_20):
    assert ErrorBudget.parse(text) == budget
    assert budget.limit(20) == limit_of_20


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "0%", "101%", "two", ""])
def test_an_error_budget_that_would_stop_before_any_fix_or_makes_no_sense_is_refused(text):
    with pytest.raises(InvalidInput, match="error budget"):
        ErrorBudget.parse(text)


def test_once_the_budget_is_spent_every_further_fix_is_skipped():
    rollout = Rollout(max_errors=ErrorBudget(count=2))
    assert admit(rollout, Tally(total=20, started=5, finished=5, failed=2)) == skip(SkipReason.ERROR_BUDGET)
    assert admit(rollout, Tally(total=20, started=5, finished=5, failed=1)) == START


def test_running_fixes_count_against_the_budget_as_if_they_would_fail():
    rollout = Rollout(max_errors=ErrorBudget(count=2))
    assert admit(rollout, Tally(total=20, started=3, finished=2, failed=1)) == WAIT
    assert admit(rollout, Tally(total=20, started=2, finished=0, failed=0)) == WAIT
    assert admit(rollout, Tally(total=20, started=1, finished=0, failed=0)) == START


def test_max_changes_counts_every_started_fix_failed_or_not():
    rollout = Rollout(max_changes=3)
    assert admit(rollout, Tally(total=20, started=3, finished=1, failed=1)) == skip(SkipReason.MAX_CHANGES)
    assert admit(rollout, Tally(total=20, started=2, finished=2, failed=2)) == START
    assert admit(Rollout(max_changes=0), Tally(total=5)) == skip(SkipReason.MAX_CHANGES)


def test_a_canary_runs_first_and_the_rest_waits_until_every_canary_fix_has_finished():
    rollout = Rollout(canary=2)
    assert admit(rollout, Tally(total=10)) == Admission(Decision.START, canary=True)
    assert admit(rollout, Tally(total=10, started=1)) == Admission(Decision.START, canary=True)
    assert admit(rollout, Tally(total=10, started=2, finished=1)) == WAIT
    assert admit(rollout, Tally(total=10, started=2, finished=2)) == START
    assert admit(rollout, Tally(total=10, started=7, finished=3)) == START


def test_one_failed_canary_fix_skips_the_rest_of_the_run():
    rollout = Rollout(canary=3)
    assert admit(rollout, Tally(total=10, started=2, finished=1, failed=1)) == skip(SkipReason.CANARY_FAILED)
    assert admit(rollout, Tally(total=10, started=3, finished=3, failed=1)) == skip(SkipReason.CANARY_FAILED)
    # after the canary passed, a failure is the budget's business
    assert admit(rollout, Tally(total=10, started=5, finished=5, failed=1)) == START


def test_the_stop_reason_names_the_budget_or_the_canary_but_not_max_changes():
    assert stop_reason(Rollout(max_errors=ErrorBudget(count=1)), Tally(10, 4, 4, 1)) == "error-budget"
    assert stop_reason(Rollout(canary=1), Tally(10, 1, 1, 1)) == "canary-failed"
    assert stop_reason(Rollout(max_changes=1), Tally(10, 1, 1, 0)) == ""
    assert stop_reason(Rollout(), Tally(10, 9, 9, 9)) == ""


def simulate(rollout: Rollout, outcomes: list[bool], concurrency: int, order: list[int]) -> tuple[int, int, int]:
    """Drive admit() like a scheduler with ``concurrency`` slots; ``outcomes[i]`` is whether fix i fails;
    ``order`` picks which running fix finishes next. Returns (started, failed, skipped)."""
    tally, queue, skipped = Tally(total=len(outcomes)), list(range(len(outcomes))), 0
    running: list[int] = []
    finish_order = iter(order)
    while queue or running:
        while queue and len(running) < concurrency:
            answer = admit(rollout, tally)
            if answer.decision == Decision.WAIT:
                break
            server = queue.pop(0)
            if answer.decision == Decision.SKIP:
                skipped += 1
                continue
            running.append(server)
            tally = Tally(tally.total, tally.started + 1, tally.finished, tally.failed)
        if not running:
            break
        done = running.pop(next(finish_order, 0) % len(running))
        tally = Tally(tally.total, tally.started, tally.finished + 1, tally.failed + outcomes[done])
    return tally.started, tally.failed, skipped


@pytest.mark.parametrize("concurrency", [1, 3, 20])
def test_whatever_the_concurrency_and_finishing_order_a_run_never_exceeds_its_budget(concurrency):
    outcomes = [i in (1, 4, 6, 9) for i in range(20)]  # 4 servers whose Exim will not restart
    for order in itertools.islice(itertools.product(range(3), repeat=20), 0, 300, 7):
        started, failed, skipped = simulate(Rollout(max_errors=ErrorBudget(count=2)), outcomes, concurrency,
                                            list(order))
        assert failed == 2
        assert started + skipped == 20


def test_a_failed_canary_touches_nothing_beyond_the_canary():
    outcomes = [i == 0 for i in range(10)]
    started, failed, skipped = simulate(Rollout(canary=2), outcomes, 5, [0] * 10)
    assert (started, failed, skipped) == (2, 1, 8)


@pytest.mark.parametrize(("tags", "expected"), [
    (("relayguard:exclude",), True), (("web", "relayguard:exclude"), True), (("web",), False), ((), False),
])
def test_the_exclude_tag_keeps_a_server_out_of_fixing(tags, expected):
    assert excluded(tags) is expected
    assert excluded(("frozen",), exclude_tags=("frozen",)) is True


def test_a_window_is_judged_in_its_own_time_zone():
    window = MaintenanceWindow.parse("sat,sun 01:00-05:00 Europe/Berlin")
    saturday_0130_berlin = datetime(2026, 12, 5, 0, 30, tzinfo=UTC)
    assert window.open_at(saturday_0130_berlin)
    assert not window.open_at(datetime(2026, 12, 5, 4, 0, tzinfo=UTC))  # 05:00 in Berlin: closed
    assert not window.open_at(datetime(2026, 12, 7, 0, 30, tzinfo=UTC))  # Monday


def test_a_window_that_wraps_past_midnight_belongs_to_the_day_it_opens():
    window = MaintenanceWindow.parse("fri 22:00-02:00 UTC")
    assert window.open_at(datetime(2026, 12, 4, 23, 0, tzinfo=UTC))  # Friday night
    assert window.open_at(datetime(2026, 12, 5, 1, 59, tzinfo=UTC))  # early Saturday, still Friday's
    assert not window.open_at(datetime(2026, 12, 5, 23, 0, tzinfo=UTC))  # Saturday night
    assert not window.open_at(datetime(2026, 12, 4, 1, 0, tzinfo=UTC))  # early Friday is Thursday's


@pytest.mark.parametrize("text", ["01:00-05:00", "sat 01:00-05:00 Mars/Olympus", "xyz 01:00-02:00 UTC",
                                  "25:00-02:00 UTC", "01:00-01:00 UTC", ""])
def test_a_malformed_window_is_refused_with_its_text(text):
    with pytest.raises(InvalidInput, match="maintenance window"):
        MaintenanceWindow.parse(text)

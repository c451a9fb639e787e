"""Rollout policy for fix runs: how many servers a run may change, its error budget, its canary, which
servers are excluded and when fixing is allowed at all. Pure: the caller keeps the run's tally (in memory
for the CLI, in the run's DynamoDB record for the stack) and asks :func:`admit` before each fix starts.

The rules, the same for the CLI and the stack (docs/operations.md, "Rolling out fix mode"):

- Every admitted fix counts as a change, whether it then succeeds or fails: a failed fix touched the
  server too, so ``max_changes`` bounds the blast radius, not the successes.
- The error budget is never overshot: a fix may start only while the failures so far plus the fixes
  still running stay under the budget, as if every running fix were to fail. With a budget of E,
  at most E fixes run at once; in exchange a run never has more than E failed fixes.
- A canary of K: the first K admitted fixes run (within the limits above) and every other fix waits
  until all K have finished; one failed canary fix skips the rest of the run (``canary-failed``).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from relayguard.domain.models import OK_OUTCOMES, Outcome
from relayguard.errors import InvalidInput


class SkipReason(enum.StrEnum):
    """Why a fix was not started (the result's ``reason`` when its outcome is ``skipped``)."""

    MAX_CHANGES = "max-changes"
    ERROR_BUDGET = "error-budget"
    CANARY_FAILED = "canary-failed"


class Decision(enum.StrEnum):
    """What :func:`admit` tells the caller to do with the next fix."""

    START = "start"
    WAIT = "wait"  # ask again when a running fix finishes (the stack: requeue the job with a delay)
    SKIP = "skip"


@dataclass(frozen=True)
class ErrorBudget:
    """SSM-style ``MaxErrors``: a count (``"2"``) or a percentage of the run's servers (``"10%"``)."""

    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> ErrorBudget:
        """``"N"`` (N >= 1) or ``"P%"`` (0 < P <= 100)."""
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", text)
        if not match:
            raise InvalidInput(f"error budget {text!r}: expected a count like 2 or a percentage like 10%")
        number, percent = float(match.group(1)), bool(match.group(2))
        if percent:
            if not 0 < number <= 100:
                raise InvalidInput(f"error budget {text!r}: a percentage must be above 0 and at most 100")
            return cls(percent=number)
        if number < 1 or number != int(number):
            raise InvalidInput(f"error budget {text!r}: a count must be a whole number of at least 1")
        return cls(count=int(number))

    def limit(self, total: int) -> int:
        """Failed fixes that stop the run, for a run of ``total`` servers: at least 1, so a percentage of
        a small run still allows its first failure to be seen rather than stopping before any fix."""
        if self.count is not None:
            return self.count
        return max(1, math.floor((self.percent or 0) * total / 100))

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.count)


@dataclass(frozen=True)
class Rollout:
    """A run's limits; the defaults limit nothing (every exposed server may be fixed at once)."""

    max_changes: int | None = None
    max_errors: ErrorBudget | None = None
    canary: int = 0

    def __post_init__(self) -> None:
        if self.max_changes is not None and self.max_changes < 0:
            raise InvalidInput(f"max changes must be 0 or more, not {self.max_changes}")
        if self.canary < 0:
            raise InvalidInput(f"canary must be 0 or more, not {self.canary}")


@dataclass(frozen=True)
class Tally:
    """What a run has done with fixes so far."""

    total: int  # servers in the run
    started: int = 0  # fixes admitted (each one a change, whatever its outcome)
    finished: int = 0  # admitted fixes that have ended
    failed: int = 0  # admitted fixes that ended failed

    @property
    def running(self) -> int:
        return self.started - self.finished


@dataclass(frozen=True)
class Admission:
    """The answer for one fix: start it (``canary`` if it is one of the first K), wait, or skip it and why."""

    decision: Decision
    reason: str = ""
    canary: bool = False


def fix_failed(outcome: Outcome) -> bool:
    """Whether an admitted fix that ended with ``outcome`` spends the error budget: anything but a proven
    fix does (a timeout or a dropped connection mid-fix may have left the server half-changed)."""
    return outcome not in OK_OUTCOMES


def admit(rollout: Rollout, tally: Tally) -> Admission:
    """May the next fix of the run start now, given what the run has done so far?"""
    if rollout.canary and tally.failed and tally.started <= rollout.canary:
        return Admission(Decision.SKIP, SkipReason.CANARY_FAILED)
    budget = rollout.max_errors.limit(tally.total) if rollout.max_errors else None
    if budget is not None and tally.failed >= budget:
        return Admission(Decision.SKIP, SkipReason.ERROR_BUDGET)
    if rollout.max_changes is not None and tally.started >= rollout.max_changes:
        return Admission(Decision.SKIP, SkipReason.MAX_CHANGES)
    in_canary = tally.started < rollout.canary
    if not in_canary and tally.finished < min(rollout.canary, tally.started):
        return Admission(Decision.WAIT)
    if budget is not None and tally.failed + tally.running >= budget:
        return Admission(Decision.WAIT)
    return Admission(Decision.START, canary=in_canary)


def stop_reason(rollout: Rollout, tally: Tally) -> str:
    """Why the run stopped starting fixes for good (``error-budget``, ``canary-failed``), or ""; a run
    that reached ``max_changes`` did what it was asked and is not stopped."""
    answer = admit(rollout, tally)
    if answer.decision == Decision.SKIP and answer.reason != SkipReason.MAX_CHANGES:
        return answer.reason
    return ""


#: The inventory tag that keeps a server out of every fix (it is still scanned and reported ``excluded``).
EXCLUDE_TAG = "relayguard:exclude"


def excluded(tags: Iterable[str], exclude_tags: Iterable[str] = (EXCLUDE_TAG,)) -> bool:
    """Whether a server with these inventory tags is left out of fixing."""
    return not set(tags).isdisjoint(exclude_tags)


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class MaintenanceWindow:
    """When fixes may run: ``[DAYS ]HH:MM-HH:MM ZONE``, e.g. ``sat,sun 01:00-05:00 Europe/Berlin``.

    Outside it a fix sweep only audits. An end before the start wraps past midnight (``22:00-02:00``),
    and then the days name the day the window opens.
    """

    start: time
    end: time
    zone: str
    days: frozenset[int] = frozenset(range(7))

    @classmethod
    def parse(cls, text: str) -> MaintenanceWindow:
        """The window from its one-line form (see the class docstring)."""
        match = re.fullmatch(r"\s*(?:([a-z,]+)\s+)?(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})\s+(\S+)\s*", text.lower()) \
            if text.strip() else None
        if not match:
            raise InvalidInput(f"maintenance window {text!r}: expected e.g. 'sat,sun 01:00-05:00 Europe/Berlin'")
        days_text, h1, m1, h2, m2, _ = match.groups()
        zone = text.rsplit(maxsplit=1)[-1]
        try:
            ZoneInfo(zone)
            start, end = time(int(h1), int(m1)), time(int(h2), int(m2))
        except (ValueError, ZoneInfoNotFoundError) as exc:
            raise InvalidInput(f"maintenance window {text!r}: {exc}") from exc
        days = frozenset(range(7))
        if days_text:
            unknown = [d for d in days_text.split(",") if d not in _DAYS]
            if unknown:
                raise InvalidInput(f"maintenance window {text!r}: unknown day {unknown[0]!r} (use mon..sun)")
            days = frozenset(_DAYS.index(d) for d in days_text.split(","))
        if start == end:
            raise InvalidInput(f"maintenance window {text!r}: start and end are the same")
        return cls(start, end, zone, days)

    def open_at(self, moment: datetime) -> bool:
        """Whether fixes may run at ``moment`` (an aware datetime)."""
        local = moment.astimezone(ZoneInfo(self.zone))
        now, weekday = local.time(), local.weekday()
        if self.start < self.end:
            return weekday in self.days and self.start <= now < self.end
        if now >= self.start:
            return weekday in self.days
        return now < self.end and (weekday - 1) % 7 in self.days

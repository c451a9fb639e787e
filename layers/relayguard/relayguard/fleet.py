"""The CLI's rollout gate: :func:`relayguard.domain.rollout.admit` over a tally kept in memory, for a fix
run whose jobs are threads of one process.

The stack keeps the same tally in the run's DynamoDB record and answers ``wait`` by requeueing the job;
here a thread that would have to wait simply blocks until a running fix ends, so the engine never sees
``wait``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

from relayguard.domain.models import Outcome
from relayguard.domain.rollout import Admission, Decision, Rollout, Tally, admit, fix_failed, stop_reason
from relayguard.domain.server import Server


class LocalGate:
    """A :class:`relayguard.ports.FixGate` for the servers of one run, safe to share between threads.

    While the canary is still being chosen, fixes are admitted in the order of ``servers`` (the
    inventory's): a server's fix waits until every server before it has been admitted, skipped or has
    ended its job without asking (:meth:`job_ended`). So the canary is the first K exposed servers of
    the inventory, whichever probe happens to answer first. After that, admission follows arrival.
    """

    def __init__(self, rollout: Rollout, servers: Sequence[Server]) -> None:
        self._rollout = rollout
        self._order = list(dict.fromkeys(s.name for s in servers))
        self._rank = {name: i for i, name in enumerate(self._order)}
        self._settled: set[str] = set()
        self._first_unsettled = 0
        self._tally = Tally(total=len(servers))
        self._skipped: dict[str, int] = {}
        self._waiting = 0
        self._cond = threading.Condition()

    @property
    def rollout(self) -> Rollout:
        return self._rollout

    @property
    def tally(self) -> Tally:
        with self._cond:
            return self._tally

    @property
    def skipped(self) -> dict[str, int]:
        """Fixes not started, by skip reason."""
        with self._cond:
            return dict(self._skipped)

    @property
    def waiting(self) -> int:
        """Threads blocked in :meth:`admit` right now."""
        with self._cond:
            return self._waiting

    def stop_reason(self) -> str:
        """Why the run stopped starting fixes for good (``error-budget``, ``canary-failed``), or ""."""
        with self._cond:
            return stop_reason(self._rollout, self._tally)

    def admit(self, server: Server) -> Admission:
        """Start or skip, never wait: blocks until the rollout policy can say one of the two."""
        with self._cond:
            while True:
                if not self._holds_for_order(server.name):
                    answer = admit(self._rollout, self._tally)
                    if answer.decision != Decision.WAIT:
                        break
                self._waiting += 1
                try:
                    self._cond.wait()
                finally:
                    self._waiting -= 1
            if answer.decision == Decision.START:
                self._tally = replace(self._tally, started=self._tally.started + 1)
            else:
                self._skipped[answer.reason] = self._skipped.get(answer.reason, 0) + 1
            self._settle(server.name)
            return answer

    def finished(self, server: Server, outcome: Outcome) -> None:
        """An admitted fix ended; anything but a good end counts against the error budget."""
        with self._cond:
            self._tally = replace(self._tally, finished=self._tally.finished + 1,
                                  failed=self._tally.failed + (fix_failed(outcome)))
            self._cond.notify_all()

    def job_ended(self, server: Server) -> None:
        """The server's job is over, whether or not it asked for a fix (compliant, unreachable, audited,
        excluded): servers after it in the inventory no longer wait for it to be the canary."""
        with self._cond:
            self._settle(server.name)

    def _holds_for_order(self, name: str) -> bool:
        choosing_canary = self._tally.started < self._rollout.canary
        rank = self._rank.get(name)
        return choosing_canary and rank is not None and rank > self._first_unsettled

    def _settle(self, name: str) -> None:
        self._settled.add(name)
        while self._first_unsettled < len(self._order) and self._order[self._first_unsettled] in self._settled:
            self._first_unsettled += 1
        self._cond.notify_all()

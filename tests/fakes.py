"""Hand-written fakes for RelayGuard's ports: no sockets, no subprocess, scripted answers only."""

from __future__ import annotations

from collections.abc import Iterable

from relayguard.errors import TransportError
from relayguard.ports import CommandResult, Target


class FakeSession:
    """Answers each ``run`` with the next scripted :class:`CommandResult` and records every script."""

    def __init__(self, results: Iterable[CommandResult] = ()) -> None:
        self._results = list(results)
        self.scripts: list[str] = []
        self.timeouts: list[float] = []
        self.closed = False

    def run(self, script: str, timeout: float) -> CommandResult:
        self.scripts.append(script)
        self.timeouts.append(timeout)
        if not self._results:
            raise AssertionError(f"unexpected script #{len(self.scripts)}: no scripted result left")
        return self._results.pop(0)

    def close(self) -> None:
        self.closed = True

    def assert_all_consumed(self) -> None:
        assert not self._results, f"{len(self._results)} scripted result(s) never requested"


class FakeConnector:
    """Hands out one :class:`FakeSession`, or raises the given transport error leaf."""

    def __init__(self, session: FakeSession | None = None, error: TransportError | None = None) -> None:
        self.session = session or FakeSession()
        self.error = error
        self.targets: list[Target] = []

    def connect(self, target: Target) -> FakeSession:
        self.targets.append(target)
        if self.error is not None:
            raise self.error
        return self.session


def ok(stdout: str, stderr: str = "", rc: int = 0) -> CommandResult:
    """A finished remote script (a non-zero ``rc`` stays a value)."""
    return CommandResult(rc=rc, stdout=stdout, stderr=stderr, duration=0.5)


class FakeBannerCheck:
    """An SMTP banner check that answers ``code`` for every host and records the hosts asked."""

    def __init__(self, code: int | None = 220) -> None:
        self.code = code
        self.asked: list[str] = []

    def __call__(self, host: str) -> int | None:
        self.asked.append(host)
        return self.code

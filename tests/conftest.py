"""Fixtures shared by every test tier: the lab fleet and its hosts."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab import Host, HostSpec, Lab, reserve_net
from lab.dns import LabDns
from lab.fleet import pristine_view

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root for mount and PID namespaces")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab per test session, on a 127.N.0.0/16 that no other lab (hand-started or another session) uses."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root for mount and PID namespaces")
    reservation = reserve_net(start=100 + os.getpid() % 150)
    lab = Lab(tmp_path_factory.mktemp("lab") / "work", net=reservation.net)
    yield lab
    lab.down()
    reservation.release()


@pytest.fixture(scope="session")
def lab_dns(lab: Lab) -> Iterator[LabDns]:
    """The lab's real DNS (nsd + unbound + a silent peer, lab/dns.py) on the lab's range, 127.<net>.252.x,
    serving every case of lab/maildomains.py; judges get ``lab_dns.resolver``."""
    dns = LabDns(lab.workdir / "dns", lab.net).start()
    yield dns
    dns.stop()


HostFactory = Callable[..., Host]


def _key(spec: HostSpec) -> str:
    return json.dumps(spec.to_json(), sort_keys=True)


class HostPool:
    """Hosts kept up across tests and reset to their pristine seed before each reuse.

    A reset restarts the host from its seed; the pool then checks that the host's tree matches the
    snapshot taken when that host first came up (hash, mode, link target), so no test can leak
    state into the next.
    """

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.free: dict[str, list[Host]] = {}
        self.pristine: dict[str, dict[str, tuple[object, ...]]] = {}
        self.count = 0

    def take(self, spec: HostSpec) -> Host:
        spare = self.free.get(_key(spec), [])
        if spare:
            host = spare.pop()
            self.lab.reset(host)
            assert pristine_view(host.snapshot()) == self.pristine[host.name], f"{host.name} not pristine"
            return host
        self.count += 1
        (host,) = self.lab.up({f"p{self.count:03d}": spec})
        self.pristine[host.name] = pristine_view(host.snapshot())
        return host

    def give_back(self, host: Host) -> None:
        if host.name in self.lab.hosts:
            self.free.setdefault(_key(host.spec), []).append(host)


@pytest.fixture(scope="session")
def host_pool(lab: Lab) -> HostPool:
    return HostPool(lab)


@pytest.fixture
def make_host(host_pool: HostPool) -> Iterator[HostFactory]:
    """Hosts for one test, each pristine (checked) when handed out; returned to the pool afterwards."""
    made: list[Host] = []

    def factory(spec: HostSpec | None = None, **kwargs: object) -> Host:
        host = host_pool.take(spec or HostSpec(**kwargs))  # type: ignore[arg-type]
        made.append(host)
        return host

    yield factory
    for host in made:
        host_pool.give_back(host)


@pytest.fixture
def make_fleet(lab: Lab, host_pool: HostPool) -> Iterator[Callable[[dict[str, HostSpec]], list[Host]]]:
    """A fleet of named hosts for one test (benchmarks, scans); stopped afterwards."""
    made: list[Host] = []

    def factory(specs: dict[str, HostSpec]) -> list[Host]:
        hosts = lab.up(specs)
        made.extend(hosts)
        return hosts

    yield factory
    for host in made:
        lab.stop_host(host)
        lab.hosts.pop(host.name, None)


@pytest.fixture
def modern(make_host: HostFactory) -> Host:
    return make_host(profile="modern")


@pytest.fixture
def legacy(make_host: HostFactory) -> Host:
    return make_host(profile="legacy")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI a skipped test fails the run: every skip here means no root or no Python 3.13, i.e. a
    CI machine set up wrong, which would otherwise pass green with the lab tests left out."""
    if os.environ.get("CI") != "true" or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped:
        reporter.write_line(f"CI=true: {len(skipped)} test(s) skipped; in CI every test must run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

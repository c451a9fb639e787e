"""Fixtures shared by every test tier: the lab fleet and its hosts."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab import Host, HostSpec, Lab

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root for mount and PID namespaces")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab per test session, on its own 127.N.0.0/16 so it never meets a hand-started lab."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root for mount and PID namespaces")
    net = 100 + os.getpid() % 150
    lab = Lab(tmp_path_factory.mktemp("lab") / "work", net=net)
    yield lab
    lab.down()


HostFactory = Callable[..., Host]


@pytest.fixture
def make_host(lab: Lab, request: pytest.FixtureRequest) -> Iterator[HostFactory]:
    """Start fresh hosts for one test; each starts from its pristine seed and is stopped afterwards."""
    made: list[Host] = []

    def factory(spec: HostSpec | None = None, **kwargs: object) -> Host:
        spec = spec or HostSpec(**kwargs)  # type: ignore[arg-type]
        base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))[:30].strip("-")
        name = f"{base}-{len(made)}"
        (host,) = lab.up({name: spec})
        made.append(host)
        return host

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

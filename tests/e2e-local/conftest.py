"""End to end, locally: handlers run through the local invoker with template.yaml's configuration,
against the stack on a moto server (127.0.0.1) and lab hosts with real sshd and real Exim."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from relayguard import bootstrap

from harness import invoke
from harness.aws import MotoServer, Stack, aws_environment, deploy
from lab import Lab


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def stack(moto_server: MotoServer, lab: Lab) -> Iterator[Stack]:
    """A fresh stack per test: moto reset, template resources created, the lab's client key as the secret."""
    moto_server.reset()
    with aws_environment(moto_server):
        bootstrap.reset_caches()
        invoke.reset()
        deployed = deploy(moto_server.endpoint)
        # A job that finds its server locked comes back after RG_LOCK_RETRY_SECONDS; 30 s in the template.
        deployed.env_overrides["RG_LOCK_RETRY_SECONDS"] = "1"
        lab.prepare()
        deployed.put_ssh_key(lab.client_key.read_text())
        yield deployed
        bootstrap.reset_caches()

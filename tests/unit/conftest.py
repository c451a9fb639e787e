"""The unit tier never touches the network: sockets are disabled around every test."""

from __future__ import annotations

import pytest
import pytest_socket


@pytest.hookimpl(trylast=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    pytest_socket.disable_socket(allow_unix_socket=False)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    pytest_socket.enable_socket()

"""The unit tier's guard holds: opening a socket fails the test."""

from __future__ import annotations

import socket

import pytest
import pytest_socket


@pytest.mark.filterwarnings("ignore:A test tried to use socket.socket")
def test_opening_a_socket_in_a_unit_test_is_blocked() -> None:
    # GIVEN the unit-tier conftest  WHEN a test opens a socket  THEN pytest-socket refuses it
    with pytest.raises(pytest_socket.SocketBlockedError):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)

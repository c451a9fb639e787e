"""Implementations of the ports in :mod:`relayguard.ports` for real SSH, AWS and notification services."""

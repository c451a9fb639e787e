"""Lambda entry point: the handler lives in the shared package (relayguard.entrypoints.worker)."""

from relayguard.entrypoints.worker import worker_handler as lambda_handler

__all__ = ["lambda_handler"]

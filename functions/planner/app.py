"""Lambda entry point: the handler lives in the shared package (relayguard.entrypoints.planner)."""

from relayguard.entrypoints.planner import planner_handler as lambda_handler

__all__ = ["lambda_handler"]

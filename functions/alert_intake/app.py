"""Lambda entry point: the handler lives in the shared package (relayguard.entrypoints.alert_intake)."""

from relayguard.entrypoints.alert_intake import alert_intake_handler as lambda_handler

__all__ = ["lambda_handler"]

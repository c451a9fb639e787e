"""``sam local invoke`` without a container: ``./scripts/local-invoke`` runs this module."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from harness.invoke import invoke
from harness.template import load_template


def placeholders(template: str | os.PathLike[str] = "template.yaml") -> dict[str, str]:
    """A stand-in for every resource's Ref and common attributes: the env-vars file gives real values."""
    out: dict[str, str] = {}
    for logical_id in (load_template(template).get("Resources") or {}):
        out[logical_id] = f"<{logical_id}>"
        for attr in ("Arn", "QueueName", "QueueUrl", "TopicName", "TopicArn"):
            out[f"{logical_id}.{attr}"] = f"<{logical_id}.{attr}>"
    return out


def env_vars_overrides(path: str | os.PathLike[str] | None, function_logical_id: str) -> dict[str, str | None]:
    """SAM's ``--env-vars`` file: ``Parameters`` apply to every function, a function's own block to it."""
    if path is None:
        return {}
    data = json.loads(Path(path).read_text())
    merged = {**(data.get("Parameters") or {}), **(data.get(function_logical_id) or {})}
    return {k: str(v) for k, v in merged.items()}


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.cli FUNCTION -e EVENT [--env-vars FILE] [--param K=V ...]``."""
    parser = argparse.ArgumentParser(
        prog="./scripts/local-invoke",
        description="Invoke a function of template.yaml in this process, like `sam local invoke` without Docker. "
                    "Resources resolve to <LogicalId> placeholders unless --env-vars gives real names; AWS calls go "
                    "where boto3 is pointed (your credentials, or AWS_ENDPOINT_URL for a moto server).")
    parser.add_argument("function", help="logical id, e.g. PlannerFunction")
    parser.add_argument("-e", "--event", required=True, help="event file, e.g. events/planner/scheduled_sweep.json")
    parser.add_argument("--env-vars", help="SAM-style JSON: {\"Parameters\": {...}, \"<Function>\": {...}}")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="template parameter override (repeatable), e.g. SweepMode=fix")
    parser.add_argument("-t", "--template", default="template.yaml")
    args = parser.parse_args(argv)
    resolve: dict[str, Any] = {**placeholders(args.template),
                               **dict(p.split("=", 1) for p in args.param)}
    event = json.loads(Path(args.event).read_text())
    answer = invoke(args.function, event, resolve=resolve, template=args.template,
                    env_overrides=env_vars_overrides(args.env_vars, args.function))
    print(json.dumps(answer, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

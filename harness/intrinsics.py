"""CloudFormation intrinsic functions, resolved the way a deployment would, for the local invoker and moto stack.

A :class:`Resolver` looks a ``Ref`` up in ``resolve`` (test-supplied names, URLs and ARNs keyed by
logical id, or ``LogicalId.Attr`` for ``Fn::GetAtt``; parameter overrides go here too), then in the
Parameter defaults, then in the pseudo parameters. Anything else raises ``KeyError`` naming it, so
a typo in the template fails the test.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_ACCOUNT = "123456789012"
DEFAULT_REGION = "eu-west-1"
#: What ``Ref AWS::NoValue`` resolves to; the enclosing list or mapping drops it, as CloudFormation does.
NO_VALUE = object()


@dataclass
class Resolver:
    """Resolves the intrinsics of one template against ``resolve``, Parameter defaults and pseudo parameters."""

    doc: dict[str, Any]
    resolve: Mapping[str, Any]
    pseudo: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
        stack = "relayguard"
        self.pseudo = {
            "AWS::AccountId": DEFAULT_ACCOUNT,
            "AWS::Region": region,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": stack,
            "AWS::StackId": f"arn:aws:cloudformation:{region}:{DEFAULT_ACCOUNT}:stack/{stack}/"
                            "00000000-0000-4000-8000-000000000000",
            "AWS::NotificationARNs": [],
        }

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.resolve:
            return self.resolve[name]
        params = self.doc.get("Parameters") or {}
        if name in params:
            param = params[name]
            if "Default" not in param:
                raise KeyError(f"Ref {name}: Parameter without Default and not in resolve")
            default = param["Default"]
            if str(param.get("Type", "")).startswith(("CommaDelimitedList", "List<")):
                return [x.strip() for x in str(default).split(",")]
            return default
        if name in self.pseudo:
            return self.pseudo[name]
        where = "a resource" if name in (self.doc.get("Resources") or {}) else "not declared"
        raise KeyError(f"Ref {name}: {where}, and not in resolve")

    def get_att(self, logical_id: str, attr: str) -> Any:
        key = f"{logical_id}.{attr}"
        if key in self.resolve:
            return self.resolve[key]
        raise KeyError(f"Fn::GetAtt {key}: not in resolve")

    def condition(self, name: str) -> bool:
        conditions = self.doc.get("Conditions") or {}
        if name not in conditions:
            raise KeyError(f"Condition {name}: not declared")
        return bool(self.value(conditions[name]))

    def sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], {k: self.value(v) for k, v in (arg[1] or {}).items()}
        else:
            text, variables = arg, {}

        def one(match: re.Match[str]) -> str:
            expr = match.group(1)
            if expr.startswith("!"):
                return "${" + expr[1:] + "}"
            if expr in variables:
                return str(variables[expr])
            if "." in expr and not expr.startswith("AWS::"):
                logical_id, attr = expr.split(".", 1)
                return str(self.get_att(logical_id, attr))
            return str(self.ref(expr))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def value(self, node: Any) -> Any:  # noqa: PLR0911, PLR0912 - one branch per intrinsic
        if isinstance(node, list):
            return [v for v in (self.value(x) for x in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::GetAtt":
                logical_id, attr = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.get_att(logical_id, self.value(attr))
            if key == "Fn::Sub":
                return self.sub(arg)
            if key == "Fn::If":
                name, then, otherwise = arg
                return self.value(then if self.condition(name) else otherwise)
            if key == "Fn::Equals":
                a, b = (self.value(x) for x in arg)
                return str(a) == str(b)
            if key == "Fn::Not":
                return not self.value(arg[0])
            if key == "Fn::And":
                return all(self.value(x) for x in arg)
            if key == "Fn::Or":
                return any(self.value(x) for x in arg)
            if key == "Fn::Join":
                sep, items = arg
                return str(self.value(sep)).join(str(x) for x in self.value(items))
            if key == "Fn::Split":
                sep, text = arg
                return str(self.value(text)).split(str(self.value(sep)))
            if key == "Fn::Select":
                index, items = arg
                return self.value(items)[int(self.value(index))]
            if key == "Fn::FindInMap":
                name, top, second = (str(self.value(x)) for x in arg[:3])
                try:
                    return (self.doc.get("Mappings") or {})[name][top][second]
                except KeyError:
                    raise KeyError(f"Fn::FindInMap {name}/{top}/{second}: no such entry") from None
            if key == "Fn::ImportValue":
                export = str(self.value(arg))
                if export in self.resolve:
                    return self.resolve[export]
                raise KeyError(f"Fn::ImportValue {export}: not in resolve")
            if key.startswith("Fn::"):
                raise KeyError(f"{key}: intrinsic not supported by the local invoker")
        return {k: v for k, v in ((k, self.value(v)) for k, v in node.items()) if v is not NO_VALUE}

"""``template.yaml`` as data, and one function of it as a deployment would configure it.

1. The template is loaded with the short-form tags (``!Ref``, ``!GetAtt``, ``!Sub``, ...) turned
   into their long forms.
2. ``Globals`` are merged into the function by SAM's own ``Globals`` plugin.
3. The intrinsics of ``Environment.Variables`` (and ``Timeout``, ``MemorySize``, ``FunctionName``)
   are resolved by :class:`harness.intrinsics.Resolver`.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from samtranslator.plugins.globals.globals import Globals

from harness.intrinsics import Resolver

REPO_ROOT = Path(__file__).resolve().parents[1]
FUNCTION_TYPE = "AWS::Serverless::Function"


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation's short-form tags."""


def _short_form(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _short_form)

_templates: dict[Path, tuple[float, dict[str, Any]]] = {}
_templates_lock = threading.Lock()


def template_path(template: str | os.PathLike[str]) -> Path:
    """``template`` as an absolute path; a relative one is relative to the repository root."""
    path = Path(template)
    return path if path.is_absolute() else REPO_ROOT / path


def load_template(template: str | os.PathLike[str] = "template.yaml") -> dict[str, Any]:
    """The template as plain data (cached until the file changes). Callers must not mutate it."""
    path = template_path(template)
    mtime = path.stat().st_mtime
    with _templates_lock:
        cached = _templates.get(path)
        if cached is None or cached[0] != mtime:
            doc = yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
            if not isinstance(doc, dict):
                raise ValueError(f"{path}: not a CloudFormation template")
            cached = (mtime, doc)
            _templates[path] = cached
        return cached[1]


def forget_templates() -> None:
    """Drop the parsed templates, so the next load reads the files again."""
    with _templates_lock:
        _templates.clear()


def _function_properties(doc: dict[str, Any], logical_id: str) -> dict[str, Any]:
    resources = doc.get("Resources") or {}
    resource = resources.get(logical_id)
    if resource is None:
        raise KeyError(f"{logical_id}: no such resource in the template")
    if resource.get("Type") != FUNCTION_TYPE:
        raise KeyError(f"{logical_id}: is a {resource.get('Type')}, not an {FUNCTION_TYPE}")
    # SAM's Globals plugin mutates what it is given: hand it copies.
    props = copy.deepcopy(resource.get("Properties") or {})
    return Globals(copy.deepcopy(doc)).merge(FUNCTION_TYPE, props, logical_id)  # type: ignore[no-any-return]


def _env_string(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise TypeError(f"environment variable {name}: resolved to {type(value).__name__} {value!r}, not a scalar")


@dataclass(frozen=True)
class FunctionSpec:
    """One function of the template after the Globals merge, its intrinsics resolved."""

    logical_id: str
    name: str
    arn: str
    region: str
    code_dir: Path
    handler: str
    timeout_s: int
    memory_mb: int
    runtime: str
    template_env: dict[str, str]
    layer_dirs: tuple[Path, ...]


def describe(function_logical_id: str, resolve: Mapping[str, Any],
             template: str | os.PathLike[str] = "template.yaml") -> FunctionSpec:
    """The function ``function_logical_id`` of ``template``, resolved against ``resolve``."""
    doc = load_template(template)
    props = _function_properties(doc, function_logical_id)
    resolver = Resolver(doc, resolve)
    env_node = ((props.get("Environment") or {}).get("Variables")) or {}
    env = {k: _env_string(k, v) for k, v in resolver.value(env_node).items()}
    name = str(resolver.value(props["FunctionName"])) if "FunctionName" in props else str(
        resolve.get(function_logical_id, f"relayguard-{function_logical_id}"))
    region = str(resolver.ref("AWS::Region"))
    account = str(resolver.ref("AWS::AccountId"))
    code_uri = props.get("CodeUri")
    if not isinstance(code_uri, str):
        raise KeyError(f"{function_logical_id}: CodeUri must be a local folder, got {code_uri!r}")
    code_dir = (template_path(template).parent / code_uri).resolve()
    layer_dirs: list[Path] = []
    for layer in props.get("Layers") or []:
        if isinstance(layer, dict) and set(layer) == {"Ref"}:
            res = (doc.get("Resources") or {}).get(layer["Ref"]) or {}
            uri = (res.get("Properties") or {}).get("ContentUri")
            if res.get("Type") == "AWS::Serverless::LayerVersion" and isinstance(uri, str):
                base = (template_path(template).parent / uri).resolve()
                layer_dirs += [p for p in (base / "python", base) if p.is_dir()]
    return FunctionSpec(
        logical_id=function_logical_id,
        name=name,
        arn=f"arn:aws:lambda:{region}:{account}:function:{name}",
        region=region,
        code_dir=code_dir,
        handler=str(resolver.value(props.get("Handler", "app.lambda_handler"))),
        timeout_s=int(resolver.value(props.get("Timeout", 3))),
        memory_mb=int(resolver.value(props.get("MemorySize", 128))),
        runtime=str(resolver.value(props.get("Runtime", "python3.13"))),
        template_env=env,
        layer_dirs=tuple(layer_dirs),
    )


def resolved_environment(function_logical_id: str, resolve: Mapping[str, Any],
                         template: str | os.PathLike[str] = "template.yaml") -> dict[str, str]:
    """The function's ``Environment.Variables`` after the Globals merge and intrinsic resolution."""
    return dict(describe(function_logical_id, resolve, template).template_env)


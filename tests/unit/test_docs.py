"""The deploy and operations guides say what the code and the template do.

Each test reads a table out of the Markdown and compares it with the thing it documents: template
parameters, every environment variable the product code reads, the outcome vocabulary, the failure
reasons the engine sets, the severity table, the SNS message attributes and the alert schema.
"""

from __future__ import annotations

import ast
import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from relayguard import config
from relayguard.domain import notify
from relayguard.domain.bounds import bounded_result
from relayguard.domain.decide import assess
from relayguard.domain.models import Mode, Outcome, Policy
from relayguard.domain.plan import plan_steps, would_fix
from relayguard.domain.probe import parse_probe
from relayguard.engine import ServerResult
from relayguard.events import AlertHost, SpamAlert

from harness.template import load_template
from tests.unit.samples import LEGACY_EXPOSED, MODERN_EXPOSED, probe_text

REPO = Path(__file__).resolve().parents[2]
DEPLOY = (REPO / "docs" / "deploy.md").read_text()
OPERATIONS = (REPO / "docs" / "operations.md").read_text()
TEMPLATE = load_template(REPO / "template.yaml")
PRODUCT_PY = [*(REPO / "layers" / "relayguard" / "relayguard").rglob("*.py"), *(REPO / "functions").rglob("*.py")]
CSF_SCRIPT = REPO / "contrib" / "csf" / "relayguard-rt-action"
CODE = re.compile(r"`([^`]+)`")


def section(text: str, heading: str) -> str:
    """The Markdown from ``heading`` (a whole heading line) to the next heading of the same or a higher level."""
    lines = text.splitlines()
    start = lines.index(heading)
    level = len(heading) - len(heading.lstrip("#"))
    end = next((i for i in range(start + 1, len(lines))
                if re.match(rf"^#{{1,{level}}} ", lines[i]) and not _in_fence(lines, i)), len(lines))
    return "\n".join(lines[start:end])


def _in_fence(lines: list[str], index: int) -> bool:
    return sum(1 for line in lines[:index] if line.startswith("```")) % 2 == 1


def tables(text: str) -> list[list[list[str]]]:
    """Every table in ``text``: rows of cells, without the header and the separator row."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            found.append(current[2:])
            current = []
    return found


def codes(cell: str) -> list[str]:
    return CODE.findall(cell)


def fenced_json(text: str) -> list[Any]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]


# -- parameters ---------------------------------------------------------------------------------


def documented_parameters() -> dict[str, str]:
    (rows,) = tables(section(DEPLOY, "## Parameters"))
    return {codes(row[0])[0]: (codes(row[1]) or [""])[0] for row in rows}


def test_every_template_parameter_is_documented_with_its_default_and_nothing_else_is() -> None:
    documented = documented_parameters()
    template = {name: str(spec.get("Default", "")) for name, spec in TEMPLATE["Parameters"].items()}
    assert len(template) >= 10
    assert set(documented) == set(template)
    assert documented == template


# -- environment variables ----------------------------------------------------------------------


_ENV_READERS = {("os", "getenv"), ("environ", "get"), ("os.environ", "get")}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def variables_read_by_python(path: Path) -> set[str]:
    """``ENV_*`` constants, and literal names given to ``os.environ.get``, ``os.getenv`` or ``os.environ[...]``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            if any(isinstance(t, ast.Name) and t.id.startswith("ENV_") for t in node.targets):
                names.add(node.value.value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            reader = (_dotted(node.func.value).rsplit(".", 1)[-1] if node.func.attr == "get" else "os", node.func.attr)
            arg = node.args[0]
            if reader in _ENV_READERS and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
        elif (isinstance(node, ast.Subscript) and _dotted(node.value).endswith("environ")
              and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)):
            names.add(node.slice.value)
    return names


def variables_read_by_csf_script() -> set[str]:
    text = CSF_SCRIPT.read_text()
    keys = re.search(r"my @KEYS = qw\((.*?)\);", text, re.S)
    assert keys is not None, "the script's @KEYS list moved; update this test"
    return set(re.findall(r"\$ENV\{(\w+)\}", text)) | set(keys.group(1).split())


def variables_the_template_sets() -> set[str]:
    found = set(TEMPLATE["Globals"]["Function"]["Environment"]["Variables"])
    for resource in TEMPLATE["Resources"].values():
        found |= set((resource.get("Properties", {}).get("Environment") or {}).get("Variables") or {})
    return found


def documented_variables() -> set[str]:
    names: set[str] = set()
    for table in tables(section(DEPLOY, "## Environment variables")):
        for row in table:
            names |= set(codes(row[0]))
    return names


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    python = set().union(*(variables_read_by_python(p) for p in PRODUCT_PY))
    assert {"RELAYGUARD_SSH_KEY", *config.ALL_VARIABLES} <= python  # the scan finds what we know is there
    read = python | variables_read_by_csf_script() | variables_the_template_sets()
    missing = read - documented_variables()
    assert not missing, f"read but not documented in docs/deploy.md: {sorted(missing)}"


def test_every_documented_relayguard_variable_is_one_the_code_reads() -> None:
    read = set().union(*(variables_read_by_python(p) for p in PRODUCT_PY)) | variables_read_by_csf_script()
    ours = {v for v in documented_variables() if v.startswith(("RG_", "RELAYGUARD_"))}
    assert ours - read == set()


#: Settings that are not one field each: how each variable's value shows in ``Settings`` (None: no limit).
_COMPOSED_SETTINGS: dict[str, Any] = {
    "RG_MAX_CHANGES": lambda s: s.rollout.max_changes,
    "RG_MAX_ERRORS": lambda s: s.rollout.max_errors,
    "RG_CANARY_SIZE": lambda s: s.rollout.canary,
}


def test_the_documented_defaults_of_the_function_settings_are_the_codes() -> None:
    table = next(t for t in tables(section(DEPLOY, "## Environment variables")) if t[0][0] == "`RG_INVENTORY_BUCKET`")
    environ = {codes(row[0])[0]: "x" for row in table if row[2] == "required"}
    settings = config.load_settings(environ)
    for row in table:
        name, default = codes(row[0])[0], row[2]
        if name.startswith("RG_") and default != "required":
            reader = _COMPOSED_SETTINGS.get(name, lambda s, n=name: getattr(s, n[3:].lower()))
            value = reader(settings)
            value = int(value) if isinstance(value, float) and value.is_integer() else value
            if default == "(empty)":
                assert value is None, name
                continue
            shown = config.UNLIMITED if value is None else value
            assert str(shown).lower() == codes(default)[0].lower(), name


# -- outcomes, reasons, severities --------------------------------------------------------------


def test_the_troubleshooting_table_covers_every_outcome_once() -> None:
    by_outcome = tables(section(OPERATIONS, "## Troubleshooting"))[0]
    listed = [codes(row[0])[0] for row in by_outcome]
    assert sorted(listed) == sorted(str(o) for o in Outcome)
    assert all(row[1] and row[2] for row in by_outcome)


def reason_codes_the_engine_sets() -> set[str]:
    """String reasons the engine can record: the reason of every ``Verdict(...)`` built in domain/verdict.py,
    what ``disable_refusal`` and ``proof_refusal`` return there, and any constant assigned to ``result.reason``
    in engine.py."""
    package = REPO / "layers" / "relayguard" / "relayguard"
    found: set[str] = set()

    def strings(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, ast.IfExp):
            return strings(node.body) + strings(node.orelse)
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            return [str(node.values[0].value).split(":")[0]]
        return []

    for node in ast.walk(ast.parse((package / "domain" / "verdict.py").read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Verdict":
            reasons = node.args[1:2] + [kw.value for kw in node.keywords if kw.arg == "reason"]
            for reason in reasons:
                found.update(strings(reason))
        elif isinstance(node, ast.FunctionDef) and node.name in ("disable_refusal", "proof_refusal"):
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return) and ret.value is not None:
                    found.update(strings(ret.value))
    for node in ast.walk(ast.parse((package / "engine.py").read_text())):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                pairs = (zip(target.elts, node.value.elts, strict=True)
                         if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                         else [(target, node.value)])
                for t, v in pairs:
                    if isinstance(t, ast.Attribute) and t.attr == "reason":
                        found.update(strings(v))
    return {code for code in found if re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", code)}


def test_the_failure_reasons_table_covers_every_reason_code_the_engine_sets() -> None:
    engine_codes = reason_codes_the_engine_sets()
    assert {"still-exposed", "whmapi1-refused", "relay-probe-accepted"} <= engine_codes
    reasons = tables(section(OPERATIONS, "## Troubleshooting"))[1]
    documented = {codes(row[0])[0].split(":")[0] for row in reasons}
    assert engine_codes - documented == set()


def test_the_severity_table_is_the_one_the_code_uses() -> None:
    (rows,) = tables(section(OPERATIONS, "### Outcome → severity"))
    assert {codes(row[0])[0]: codes(row[1])[0] for row in rows} == {str(k): v for k, v in notify.SEVERITY.items()}
    assert set(notify.SEVERITY) == set(Outcome)


def test_the_reason_severity_table_is_the_one_the_code_uses_and_names_real_reasons() -> None:
    (rows,) = tables(section(OPERATIONS, "### Failure reason → severity"))
    assert {codes(row[0])[0]: codes(row[1])[0] for row in rows} == notify.REASON_SEVERITY
    assert set(notify.REASON_SEVERITY) <= reason_codes_the_engine_sets()


# -- notifications and alerts -------------------------------------------------------------------


def attribute_vocabulary() -> dict[str, set[str]]:
    return {
        "event": {"server-result", "run-digest", "run-stopped", notify.DELIVERABILITY_EVENT},
        "outcome": {str(o) for o in Outcome} | set(notify.NOTIFICATION_SCHEMA["$defs"]["runDigest"]["properties"]
                                                   ["outcome"]["enum"]) | {"stopped", "failing", "ok"},
        "severity": {*notify.SEVERITY.values(), notify.STOPPED_SEVERITY},
        "mode": {str(m) for m in Mode},
        "finding": {"relay", "deliverability"},
    }


def test_the_documented_message_attributes_are_the_ones_published() -> None:
    (rows,) = tables(section(DEPLOY, "## Subscribing to notifications"))
    documented = {codes(row[0])[0] for row in rows}
    doc = notify.server_message(ServerResult(name="web1", address="192.0.2.1", mode="audit",
                                             outcome=Outcome.NONCOMPLIANT).to_json(),
                                "noncompliant", "sweep-1", "sweep", "2026-11-25T13:23:10+00:00")
    assert documented == set(notify.attributes(doc))


def _policy_values(condition: Any) -> list[str]:
    values: list[str] = []
    for item in condition:
        if isinstance(item, dict):
            (operator, operand), = item.items()
            assert operator == "anything-but", operator
            values += operand if isinstance(operand, list) else [operand]
        else:
            values.append(item)
    return values


@pytest.mark.parametrize("policy", [p for p in fenced_json(section(DEPLOY, "## Subscribing to notifications"))
                                    if p.get("source") != "custom"],  # a Chatbot message's example, not a policy
                         ids=lambda p: json.dumps(p, sort_keys=True)[:60])
def test_each_documented_filter_policy_uses_real_attributes_and_values(policy: dict[str, Any]) -> None:
    vocabulary = attribute_vocabulary()
    for attribute, condition in policy.items():
        assert attribute in [*vocabulary, "server"], attribute
        if attribute in vocabulary:
            assert set(_policy_values(condition)) <= vocabulary[attribute], (attribute, condition)


def test_the_pager_policy_lets_through_exactly_the_failure_outcomes() -> None:
    pager = fenced_json(section(DEPLOY, "### Only failures to a pager"))[0]
    assert pager["event"] == ["server-result"]
    assert set(pager["outcome"]) == {str(o) for o in notify.FAILURES}


def test_the_alert_field_table_is_the_alert_model() -> None:
    (rows,) = tables(section(DEPLOY, "### EventBridge PutEvents"))
    documented = {name for row in rows for name in codes(row[0])}
    assert documented == {field.alias or name for name, field in SpamAlert.model_fields.items()}
    cells = {codes(row[0])[0]: row[2] for row in rows}
    for field_name in ("source", "kind"):
        allowed = set(typing.get_args(SpamAlert.model_fields[field_name].annotation))
        assert set(codes(cells[field_name])) == allowed, field_name
    assert set(codes(cells["host"])) >= set(AlertHost.model_fields)


def test_the_put_events_example_is_an_alert_the_intake_accepts() -> None:
    block = re.search(r"aws events put-events --entries '(\[.*?\])'", DEPLOY, re.S)
    assert block is not None
    (entry,) = json.loads(block.group(1))
    assert (entry["Source"], entry["DetailType"]) == ("relayguard.alerts", "Spam Alert")
    SpamAlert.model_validate_json(entry["Detail"])


def test_every_revert_reason_and_warning_is_documented_in_reverting_a_fix() -> None:
    # Every kebab-case code domain/revert.py can put in a result, and the engine's own revert reasons.
    package = REPO / "layers" / "relayguard" / "relayguard"
    found = {node.value.split(":")[0] for node in ast.walk(ast.parse((package / "domain" / "revert.py").read_text()))
             if isinstance(node, ast.Constant) and isinstance(node.value, str)
             and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+(:.*)?", node.value)}
    engine = (package / "engine.py").read_text()
    found |= {code for code in re.findall(r'Verdict\(Outcome\.FAILED, f?"([a-z0-9-]+)', engine)}
    assert {"no-revert-record", "relay-probe-refused", "revert-record-not-written"} <= found
    prose = re.sub(r"```.*?```", "", section(OPERATIONS, "### Reverting a fix"), flags=re.S)
    documented = {code.split(":")[0] for code in codes(prose)}
    assert found - documented == set()


def test_the_revert_request_example_is_an_alert_that_asks_for_a_revert() -> None:
    block = re.search(r"aws events put-events --entries '(\[.*?\])'", section(OPERATIONS, "### Reverting a fix"), re.S)
    assert block is not None
    (entry,) = json.loads(block.group(1))
    assert (entry["Source"], entry["DetailType"]) == ("relayguard.alerts", "Spam Alert")
    assert SpamAlert.model_validate_json(entry["Detail"]).action == "revert"


# -- result record, plan ------------------------------------------------------------------------

CLI = (REPO / "docs" / "cli.md").read_text()


def test_the_json_field_table_lists_every_field_of_a_result() -> None:
    rows = tables(section(CLI, "### JSON"))[0]
    # What `--json` prints: the bounded view of the result record (domain.bounds).
    fields = bounded_result(
        ServerResult(name="web1", address="203.0.113.10", mode="audit", outcome=Outcome.COMPLIANT).to_json())
    assert [codes(row[0])[0] for row in rows] == list(fields)


def test_the_plan_table_lists_every_line_and_step_a_plan_can_have() -> None:
    documented = {(line, step) for row in tables(section(CLI, "### The plan"))[0]
                  for line, step in zip(codes(row[0]), codes(row[1]), strict=True)}
    produced: set[tuple[str, str]] = set()
    for facts in (MODERN_EXPOSED, LEGACY_EXPOSED):
        finding = parse_probe(probe_text(facts))
        for disable_tracker in (False, True):
            plan = would_fix(finding, assess(finding), Policy(mode=Mode.AUDIT, disable_tracker=disable_tracker))
            produced |= {(line, str(name)) for name, line in plan_steps(plan)}
    assert produced == documented

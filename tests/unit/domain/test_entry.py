"""The entry program and its operations, as plain data: argument tables, refusals, quoting, the header,
the authorized_keys line and the sudoers drop-in. tests/integration/test_restricted_key.py runs it."""

from __future__ import annotations

import re

import pytest
from relayguard.domain.entry import (
    ENTRY_DIGEST,
    ENTRY_PATH,
    ENTRY_PROGRAM,
    ENTRY_VERSION,
    OPERATIONS,
    PROBE,
    REFUSED_RC,
    UNRESTRICTED,
    Access,
    authorized_keys_line,
    command_of,
    key_blob,
    read_header,
    script_of,
    stdin_of,
    sudoers_text,
)
from relayguard.domain.operation import FLAG, IP_CHARS, RECORD_CHARS, Arg, Operation, check
from relayguard.domain.probe import PROBE_SCRIPT
from relayguard.errors import InvalidInput

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHcdLdVq3VgEXAMPLEEXAMPLEEXAMPLEEXAMPLEexampl fleet@relayguard"
FINISH = Operation("finish", (("ip", "203.0.113.7"), ("sender", "relayguard-probe@example.com")))


# --- operations and their arguments ------------------------------------------------------------

def test_the_program_serves_exactly_relayguards_operations() -> None:
    assert set(OPERATIONS) == {"probe", "disable", "finish", "revert-probe", "revert"}
    for name, spec in OPERATIONS.items():
        sentinel = "RG_BODY_" + name.upper().replace("-", "_")
        # each body is embedded verbatim, as a quoted here-document the shell does not expand
        assert f"sh -s -- \"$@\" <<'{sentinel}'\n{spec.body}{sentinel}\n" in ENTRY_PROGRAM


def test_the_probe_is_the_same_text_on_both_paths() -> None:
    assert script_of(PROBE) == PROBE_SCRIPT
    assert command_of(PROBE) == f"{ENTRY_PATH} probe"
    assert command_of(PROBE, sudo=True) == f"sudo -n {ENTRY_PATH} probe"
    assert stdin_of(PROBE) == b""


def test_arguments_travel_as_lines_on_stdin_and_as_one_quoted_set_line() -> None:
    op = Operation("revert", (("restore_relayhostsusers", "198.51.100.9 carol"), ("relay_list", "relayhosts"),
                              ("ip", "198.51.100.9"), ("sender", "a@example.com")))
    assert stdin_of(op) == (b"restore_relayhostsusers=198.51.100.9 carol\nrelay_list=relayhosts\n"
                            b"ip=198.51.100.9\nsender=a@example.com\n")
    first = script_of(op).splitlines()[0]
    assert first == ("set -- 'restore_relayhostsusers=198.51.100.9 carol' relay_list=relayhosts ip=198.51.100.9 "
                     "sender=a@example.com")


@pytest.mark.parametrize("op", [
    Operation("shell", (("cmd", "id"),)),
    Operation("probe", (("ip", "1.2.3.4"),)),  # the probe takes no argument
    Operation("finish", (("ip", "1.2.3.4;touch /tmp/x"),)),
    Operation("finish", (("ip", "$(reboot)"),)),
    Operation("finish", (("sender", "a b@example.com"),)),
    Operation("finish", (("sender", "a@example.com\nid"),)),
    Operation("finish", (("disable_tracker", "yes"),)),
    Operation("finish", (("ip", "1.2.3.4"), ("ip", "1.2.3.5"))),  # a scalar given twice
    Operation("finish", tuple(("alwaysrelay", f"192.0.2.{i}") for i in range(17))),  # past the limit
    Operation("revert", (("restore_relayhosts", "1.2.3.4 `id`"),)),
    Operation("revert", (("relay_list", "../../etc/passwd"),)),
    Operation("disable", (("record", "{\"a\":\"$(id)\"}"),)),
])
def test_an_operation_or_argument_outside_the_tables_is_refused_before_it_is_sent(op: Operation) -> None:
    with pytest.raises(InvalidInput):
        script_of(op)
    if op.name in OPERATIONS:
        with pytest.raises(InvalidInput):
            check(op, OPERATIONS[op.name])


def test_a_valid_operation_passes_unchanged() -> None:
    assert check(FINISH, OPERATIONS["finish"]) is FINISH


def test_bracket_expressions_put_the_special_characters_where_posix_reads_them_literally() -> None:
    assert FLAG.bracket() == "[1]"
    assert Arg(IP_CHARS, 45).bracket() == "[.0123456789:ABCDEFabcdef]"
    record = Arg(RECORD_CHARS, 9).bracket()
    assert record.startswith("[]")
    assert record.endswith("[-]")
    assert "\\" in record
    assert "'" not in record


def test_every_argument_check_in_the_program_comes_from_the_tables() -> None:
    arms = re.findall(r"^    ([a-z-]+):([a-z_]+)\) ", ENTRY_PROGRAM, re.M)
    assert sorted(arms) == sorted((name, key) for name, spec in OPERATIONS.items() for key in spec.args)


# --- the header and access ----------------------------------------------------------------------

def test_the_header_is_read_and_split_off() -> None:
    out = f"entry.version={ENTRY_VERSION}\nentry.digest={ENTRY_DIGEST}\nscan.schema=1\nscan.end=1\n"
    access, refusal, rest = read_header(out)
    assert access == Access("restricted", ENTRY_VERSION, ENTRY_DIGEST)
    assert (refusal, rest) == ("", "scan.schema=1\nscan.end=1\n")
    assert access.warnings() == ()


def test_a_refusal_is_reported_with_the_version_of_the_program() -> None:
    access, refusal, _ = read_header("entry.version=0\nentry.digest=abc\nentry.refused=unknown operation\n")
    assert access is not None
    assert access.version == 0
    assert refusal == "unknown operation"
    assert access.warnings() == ("entry-program-outdated",)


def test_output_without_the_header_means_no_entry_program() -> None:
    assert read_header("sh: 1: /usr/local/sbin/relayguard-entry: not found\n")[0] is None
    assert read_header("")[0] is None
    assert UNRESTRICTED.warnings() == ("unrestricted-key",)


def test_the_program_reports_its_version_and_digest_and_refuses_with_exit_65() -> None:
    assert f"RG_ENTRY_VERSION={ENTRY_VERSION}\n" in ENTRY_PROGRAM
    assert f"RG_ENTRY_DIGEST={ENTRY_DIGEST}\n" in ENTRY_PROGRAM
    assert f"  exit {REFUSED_RC}\n" in ENTRY_PROGRAM
    assert "logger -p auth.warning -t relayguard-entry" in ENTRY_PROGRAM
    assert not re.search(r"\beval\b", ENTRY_PROGRAM)  # nothing the client sends is ever evaluated


# --- enrolment text -----------------------------------------------------------------------------

def test_the_authorized_keys_line_forces_the_program_and_restricts_everything_else() -> None:
    assert authorized_keys_line(KEY, ["10.0.0.0/8", "192.0.2.7"]) == (
        f'restrict,command="{ENTRY_PATH}",from="10.0.0.0/8,192.0.2.7/32" {KEY}')
    assert authorized_keys_line(KEY, sudo=True) == f'restrict,command="{ENTRY_PATH} --sudo" {KEY}'
    assert key_blob(authorized_keys_line(KEY)) == KEY.split()[1]


@pytest.mark.parametrize("bad", ["", "ssh-ed25519", "ssh-dss AAAA", KEY + "\n" + KEY,
                                 'command="/bin/sh" ' + KEY, "ssh-ed25519 AAAA$(id)"])
def test_only_one_plain_public_key_line_is_accepted(bad: str) -> None:
    with pytest.raises(InvalidInput):
        authorized_keys_line(bad)


def test_a_from_value_must_be_an_address_or_network() -> None:
    with pytest.raises(InvalidInput):
        authorized_keys_line(KEY, ['10.0.0.0/8",command="/bin/sh'])


def test_the_sudoers_drop_in_allows_only_the_entry_program() -> None:
    text = sudoers_text("cpuser")
    rules = [line for line in text.splitlines() if line and not line.startswith(("#", "Defaults"))]
    assert rules == [f"cpuser ALL=(root) NOPASSWD: {ENTRY_PATH}"]
    assert "/bin/sh" not in text
    for bad in ("root", "cp user", "a,b", "ALL"):
        with pytest.raises(InvalidInput):
            sudoers_text(bad)

"""Remote operations: a fixed script body per operation name plus validated ``key=value`` arguments.

Every remote step RelayGuard runs is an :class:`Operation`. Its body is fixed text (rendered once, from
the pure renderers of probe.py, script.py and revert.py) that reads its values only from its positional
parameters; the values are plain data checked against the operation's :class:`Arg` table. The same
body runs two ways (ADR 0007):

* through the entry program (domain/entry.py) a server has installed: the client sends only the
  operation's name as the command and the arguments as lines on stdin; the program checks them against
  this same table and runs the body with ``sh -s -- ARG...``;
* on a server without it (the unrestricted path): :func:`script_of` prefixes the body with one
  ``set -- 'ARG'...`` line, quoted once, and the text goes to ``sh -s`` on stdin.
"""

from __future__ import annotations

import shlex
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from relayguard.errors import InvalidInput

#: Characters of each kind of value; the entry program checks the same sets with ``grep``.
IP_CHARS = string.hexdigits + ".:"
SENDER_CHARS = string.ascii_letters + string.digits + "._+-@"
#: A relay-list line (revert.py's ``_LINE``): an address, then plain mailbox text.
LINE_CHARS = string.ascii_letters + string.digits + '.:@_+,"- '
#: The revert record, one JSON line of :func:`relayguard.domain.revert.record_document`.
RECORD_CHARS = LINE_CHARS + "{}[]\\/"
WORD_CHARS = string.ascii_lowercase + "_"


@dataclass(frozen=True)
class Arg:
    """What one argument key accepts: these characters, 1 to ``maxlen`` of them, at most ``many`` times."""

    chars: str
    maxlen: int
    many: int = 1

    def accepts(self, value: str) -> bool:
        return 0 < len(value) <= self.maxlen and set(value) <= set(self.chars)

    def bracket(self) -> str:
        """The set as a POSIX bracket expression: ``]`` first, ``[`` and ``-`` last, so none is special."""
        rest = "".join(sorted(set(self.chars) - set("]-[")))
        return ("[" + ("]" if "]" in self.chars else "") + rest + ("[" if "[" in self.chars else "")
                + ("-" if "-" in self.chars else "") + "]")


FLAG = Arg("1", 1)


@dataclass(frozen=True)
class OperationSpec:
    """One operation: its fixed body and the arguments it takes (a list key may repeat)."""

    name: str
    body: str
    args: Mapping[str, Arg] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    """An operation to run: its name and its ``(key, value)`` arguments, in order."""

    name: str
    args: tuple[tuple[str, str], ...] = ()

    def lines(self) -> tuple[str, ...]:
        """The arguments as the entry program reads them on stdin, one ``key=value`` per line."""
        return tuple(f"{key}={value}" for key, value in self.args)

    def value(self, key: str) -> str:
        """The (first) value of ``key``, or ""."""
        return next((v for k, v in self.args if k == key), "")

    def values(self, key: str) -> tuple[str, ...]:
        return tuple(v for k, v in self.args if k == key)


def check(op: Operation, spec: OperationSpec) -> Operation:
    """``op`` if every argument fits ``spec``'s table; :class:`InvalidInput` naming the first that does not."""
    if op.name != spec.name:
        raise InvalidInput(f"operation {op.name!r} is not {spec.name!r}")
    counts: dict[str, int] = {}
    for key, value in op.args:
        arg = spec.args.get(key)
        if arg is None:
            raise InvalidInput(f"operation {op.name} takes no argument {key!r}")
        counts[key] = counts.get(key, 0) + 1
        if counts[key] > arg.many:
            raise InvalidInput(f"operation {op.name}: argument {key} given more than {arg.many} time(s)")
        if not arg.accepts(value):
            raise InvalidInput(f"operation {op.name}: argument {key}={value!r} is not acceptable")
    return op


def parse_args_lines(args: Mapping[str, Arg]) -> str:
    """Body lines that read the positional ``key=value`` arguments: a scalar key into ``$RG_<key>``, a
    list key (``many`` > 1) appended to the file ``$RG_D/<key>``. Data only: values are never evaluated.
    Runs after ``STEP_HELPERS`` made ``$RG_D``."""
    if not args:
        return ""
    lines = [f"RG_{key}=" for key, arg in args.items() if arg.many == 1]
    lines += ['for rg_a in "$@"; do', "  rg_v=${rg_a#*=}", "  case ${rg_a%%=*} in"]
    for key, arg in args.items():
        action = f"RG_{key}=$rg_v" if arg.many == 1 else f"printf '%s\\n' \"$rg_v\" >> \"$RG_D/{key}\""
        lines.append(f"    {key}) {action} ;;")
    lines += ["  esac", "done"]
    return "\n".join(lines) + "\n"


def script_of(op: Operation, specs: Mapping[str, OperationSpec]) -> str:
    """The unrestricted path's script: the arguments as one ``set --`` line, quoted once, then the body."""
    spec = specs.get(op.name)
    if spec is None:
        raise InvalidInput(f"unknown operation {op.name!r}")
    check(op, spec)
    prefix = ("set -- " + " ".join(shlex.quote(line) for line in op.lines()) + "\n") if op.args else ""
    return prefix + spec.body


def operation(name: str, args: Iterable[tuple[str, str]] = ()) -> Operation:
    return Operation(name, tuple(args))

"""``relayguard inventory add``: fetch a server's host keys, have them confirmed, pin them in the inventory.

Like ``ssh-keyscan``, but a key is never trusted silently. The operator confirms what was fetched
either by giving the fingerprint out of band (``--fingerprint SHA256:...``, checked here) or by
answering a question on a terminal. Without a terminal and without a fingerprint nothing is
written. Exit codes: 0 pinned (or nothing to change), 1 the operator said no, 2 refused or failed;
the inventory file is only ever replaced whole, after validation.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from relayguard.domain.hostkeys import fingerprint, known_hosts_name, parse_fingerprint
from relayguard.errors import RelayGuardError
from relayguard.inventory import parse_document, parse_inventory, upsert_server

#: (host, port, timeout) → the host keys the server offers, as ``type base64`` lines.
FetchHostKeys = Callable[[str, int, float], tuple[str, ...]]

DECLINED = 1
REFUSED = 2


@dataclass(frozen=True)
class AddRequest:
    host: str
    port: int
    inventory: Path
    name: str | None = None
    user: str | None = None
    aliases: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    fingerprints: tuple[str, ...] = ()
    timeout: float = 15.0


class Refused(RelayGuardError):
    """Nothing was written; the message says why and what to do."""


def add_server(request: AddRequest, fetch: FetchHostKeys, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    """Fetch, show, confirm, pin. Every refusal leaves the inventory file as it was."""
    try:
        return _add(request, fetch, stdin, out, err)
    except Refused as exc:
        print(f"relayguard: {exc}; nothing written", file=err)
        return REFUSED
    except RelayGuardError as exc:
        print(f"relayguard: {exc}; nothing written to {request.inventory}", file=err)
        return REFUSED


def _add(request: AddRequest, fetch: FetchHostKeys, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    wanted = []
    for text in request.fingerprints:
        try:
            wanted.append(parse_fingerprint(text))
        except ValueError as exc:
            raise Refused(str(exc)) from None
    data, fmt, original = _read(request.inventory)
    # Every field but the keys is checked before the server is contacted.
    upsert_server(data, host=request.host, port=request.port, host_keys=(), name=request.name, user=request.user,
                  aliases=request.aliases, tags=request.tags)
    offered = fetch(request.host, request.port, request.timeout)
    where = known_hosts_name(request.host, request.port)
    print(f"{where} offers {len(offered)} host key(s):", file=out)
    for line in offered:
        print(f"  {fingerprint(line)}  {line.split()[0]}", file=out)

    if wanted:
        unmatched = [fp for fp in wanted if fp not in {fingerprint(line) for line in offered}]
        if unmatched:
            raise Refused(f"{', '.join(unmatched)} matches none of the keys {where} offers. If you copied it "
                          "from the server's console, the connection may be intercepted; investigate")
        pinned = [line for line in offered if fingerprint(line) in wanted]
    else:
        pinned = list(offered)

    doc, before = upsert_server(data, host=request.host, port=request.port, host_keys=pinned, name=request.name,
                                user=request.user, aliases=request.aliases, tags=request.tags)
    name = _entry_name(doc, request, before)
    old_keys = [str(k) for k in (before or {}).get("host_keys") or []]
    replaced = [k for k in old_keys if k.split()[:2] not in [p.split()[:2] for p in pinned]]
    if replaced:
        print(f"This replaces the key(s) pinned for {name} now: "
              f"{', '.join(_safe_fingerprint(k) for k in replaced)}", file=out)
    if doc == data:
        print(f"{name} in {request.inventory} already has these keys pinned; nothing to change", file=out)
        return 0

    if not wanted:
        if not stdin.isatty():
            raise Refused("standard input is not a terminal and no --fingerprint was given. Compare the "
                          "fingerprints above with the server's own (on its console: ssh-keygen -lf "
                          "/etc/ssh/ssh_host_ed25519_key.pub), then run again with --fingerprint SHA256:...")
        err.write(f"Compare these with the server's own fingerprints (on its console: ssh-keygen -lf "
                  f"/etc/ssh/ssh_host_ed25519_key.pub).\nPin them for {name} in {request.inventory}? [y/N] ")
        err.flush()
        if stdin.readline().strip().lower() not in ("y", "yes"):
            print("relayguard: not confirmed; nothing written", file=err)
            return DECLINED

    _write(request.inventory, doc, fmt, original, err)
    verb = "updated" if before is not None else "added"
    print(f"{verb} {name} ({where}) in {request.inventory}: {len(pinned)} pinned host key(s)", file=out)
    return 0


def _entry_name(doc: dict[str, Any], request: AddRequest, before: dict[str, Any] | None) -> str:
    if before is not None:
        return str(before.get("name"))
    return str(doc["servers"][-1]["name"]) if doc["servers"] else request.host


def _safe_fingerprint(line: str) -> str:
    try:
        return fingerprint(line)
    except (ValueError, IndexError):
        return "(unreadable key)"


def _read(path: Path) -> tuple[Any, str, str | None]:
    """The raw document (validated), its format and its text; a new file gets the format of its suffix."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        fmt = "yaml" if path.suffix.lower() in (".yaml", ".yml") else "json"
        return {"servers": []}, fmt, None
    except OSError as exc:
        raise RelayGuardError(f"{path}: {exc.strerror}") from None
    data, fmt = parse_document(text, str(path))
    try:
        parse_inventory(data)
    except RelayGuardError as exc:
        raise RelayGuardError(f"{path} is not a valid inventory ({exc}); fix it first") from None
    return data, fmt, text


def _write(path: Path, doc: dict[str, Any], fmt: str, original: str | None, err: TextIO) -> None:
    if fmt == "json":
        text = json.dumps(doc, indent=2) + "\n"
    else:
        text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
        if original is not None and any(line.lstrip().startswith("#") for line in original.splitlines()):
            # PyYAML drops comments: keep the operator's annotated file next to the new one.
            backup = path.with_name(path.name + ".bak")
            backup.write_text(original)
            print(f"relayguard: YAML comments are not kept; the previous file is {backup}", file=err)
    mode = path.stat().st_mode & 0o7777 if original is not None else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

"""The fleet inventory: who the servers are, how to reach them, and the host keys pinned for them.

Format (JSON, or YAML with the same shape)::

    {"defaults": {"user": "root", "port": 22},
     "servers": [{"name": "web1", "host": "203.0.113.10", "port": 22, "user": "root",
                  "host_keys": ["ssh-ed25519 AAAA..."], "tags": ["prod"],
                  "aliases": ["web1.example.com", "198.51.100.10", "i-0abc123"]}]}

Every error names the entry and the field, e.g. ``servers[3] (web4).host_keys[0]: not an OpenSSH public key``.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from relayguard.domain.hostkeys import check_host_key
from relayguard.domain.server import Inventory, Server, identity_key
from relayguard.errors import InventoryError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def _host(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        if not _HOSTNAME.match(value):
            raise ValueError(f"{value!r} is neither an IP address nor a hostname") from None
        return value


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
        raise ValueError("must be a list of non-empty strings")
    return tuple(value)


def _server(index: int, raw: Any, defaults: Mapping[str, Any]) -> Server:
    where = f"servers[{index}]"
    if not isinstance(raw, dict):
        raise InventoryError(f"{where}: must be an object")
    name = raw.get("name")
    if isinstance(name, str):
        where = f"{where} ({name})"
    unknown = set(raw) - {"name", "host", "port", "user", "host_keys", "tags", "aliases"}
    if unknown:
        raise InventoryError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")

    def field(key: str, check: Any) -> Any:
        try:
            return check(raw.get(key, defaults.get(key)))
        except ValueError as exc:
            raise InventoryError(f"{where}.{key}: {exc}") from None

    def name_check(v: Any) -> str:
        if not isinstance(v, str) or not _NAME.match(v):
            raise ValueError("required; letters, digits, '.', '_' or '-'")
        return v

    def port_check(v: Any) -> int:
        v = 22 if v is None else v
        if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < 65536:
            raise ValueError("must be an integer from 1 to 65535")
        return v

    def user_check(v: Any) -> str:
        v = "root" if v is None else v
        if not isinstance(v, str) or not _USER.match(v):
            raise ValueError("must be a valid Unix login name")
        return v

    keys_raw = field("host_keys", _strings)
    keys = []
    for i, line in enumerate(keys_raw):
        try:
            keys.append(check_host_key(line))
        except ValueError as exc:
            raise InventoryError(f"{where}.host_keys[{i}]: {exc}") from None
    return Server(
        name=field("name", name_check),
        host=field("host", _host),
        port=field("port", port_check),
        user=field("user", user_check),
        host_keys=tuple(keys),
        tags=field("tags", _strings),
        aliases=field("aliases", _strings),
    )


def parse_inventory(data: Any, fallback: Mapping[str, Any] | None = None) -> Inventory:
    """Validate an inventory. ``fallback`` (e.g. the CLI's ``--user``) fills fields that neither an
    entry nor the file's ``defaults`` set."""
    if not isinstance(data, dict) or not isinstance(data.get("servers"), list):
        raise InventoryError("inventory: expected an object with a 'servers' list")
    file_defaults = data.get("defaults") or {}
    if not isinstance(file_defaults, dict):
        raise InventoryError("defaults: must be an object")
    defaults = {**(fallback or {}), **file_defaults}
    servers = tuple(_server(i, raw, defaults) for i, raw in enumerate(data["servers"]))
    # Counted once: list.count per server made a 10,000-server inventory take seconds (bench.scale).
    names = Counter(s.name for s in servers)
    for s in servers:
        if names[s.name] > 1:
            raise InventoryError(f"servers ({s.name}).name: appears {names[s.name]} times")
    seen: dict[str, str] = {}
    for s in servers:
        for ident in s.identities():
            if ident in seen and seen[ident] != s.name:
                raise InventoryError(f"servers ({s.name}): identity {ident!r} also belongs to {seen[ident]}")
            seen[ident] = s.name
    return Inventory(servers)


def parse_document(text: str, source: str = "inventory") -> tuple[Any, str]:
    """The raw document of an inventory text and its format, ``"json"`` or ``"yaml"`` (not yet validated)."""
    try:
        return json.loads(text), "json"
    except ValueError:
        import yaml  # noqa: PLC0415 - only YAML inventories pay for the import (the CLI's and Lambda's start-up)

        try:
            return yaml.safe_load(text), "yaml"
        except yaml.YAMLError as exc:
            raise InventoryError(f"{source}: neither JSON nor YAML ({exc.__class__.__name__})") from None


def load_text(text: str, source: str = "inventory", fallback: Mapping[str, Any] | None = None) -> Inventory:
    return parse_inventory(parse_document(text, source)[0], fallback)


def load_inventory(path: str | Path, fallback: Mapping[str, Any] | None = None) -> Inventory:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InventoryError(f"{path}: {exc.strerror}") from None
    return load_text(text, str(path), fallback)


def servers_by_name(servers: Iterable[Server]) -> dict[str, Server]:
    return {s.name: s for s in servers}


def upsert_server(data: Any, *, host: str, port: int, host_keys: Sequence[str], name: str | None = None,
                  user: str | None = None, aliases: Sequence[str] = (), tags: Sequence[str] = ()
                  ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``data`` (a raw inventory document, left untouched) with one server added or updated.

    The entry is the one called ``name``, else the one whose ``host`` is ``host``, else a new one
    named ``name`` or ``host``. Its pinned keys become ``host_keys``; ``user`` replaces, ``aliases``
    and ``tags`` add to what it had; every other entry and field stays as it was. The result is
    validated like any inventory (:class:`InventoryError` names the problem). Returns the new
    document and the entry as it was before (None for a new one).
    """
    doc = copy.deepcopy(data) if data is not None else {"servers": []}
    if not isinstance(doc, dict) or not isinstance(doc.get("servers"), list):
        raise InventoryError("inventory: expected an object with a 'servers' list")
    servers: list[Any] = doc["servers"]
    wanted_host = identity_key(host)

    def matches(entry: Any) -> bool:
        if not isinstance(entry, dict):
            return False
        if name is not None:
            return bool(entry.get("name") == name)
        return isinstance(entry.get("host"), str) and identity_key(entry["host"]) == wanted_host

    index = next((i for i, entry in enumerate(servers) if matches(entry)), None)
    before = copy.deepcopy(servers[index]) if index is not None else None
    entry: dict[str, Any] = servers[index] if index is not None else {"name": name or host}
    entry["host"] = host
    if port != 22 or "port" in entry:
        entry["port"] = port
    if user is not None:
        entry["user"] = user
    entry["host_keys"] = [check_host_key(line) for line in host_keys]
    for key, extra in (("aliases", aliases), ("tags", tags)):
        merged = list(entry.get(key) or [])
        merged += [x for x in extra if x not in merged]
        if merged:
            entry[key] = merged
    if index is None:
        servers.append(entry)
    parse_inventory(doc)
    return doc, before

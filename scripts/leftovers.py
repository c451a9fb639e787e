#!/usr/bin/env python3
"""What a command left running on this machine: processes, mounts and listening sockets.

    scripts/leftovers.py snapshot > before.json
    ./scripts/demo
    scripts/leftovers.py compare before.json     # exit 1 and a list if anything new is still there

Kernel threads are ignored (they come and go on their own), and so is this script's own process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def processes() -> dict[str, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ppid, state = int(fields[1]), fields[0]
        if int(entry.name) == 2 or ppid == 2 or state == "Z":
            continue
        starttime = fields[19]
        found[f"{entry.name}@{starttime}"] = cmdline or stat.split("(", 1)[1].rsplit(")", 1)[0]
    return found


def mounts() -> list[str]:
    return sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())


def listeners() -> list[str]:
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                out.append(f"{table[-4:]} {fields[1]}")
    return sorted(out)


def snapshot() -> dict[str, object]:
    return {"processes": processes(), "mounts": mounts(), "listeners": listeners()}


def main(argv: list[str]) -> int:
    if argv[:1] == ["snapshot"]:
        json.dump(snapshot(), sys.stdout)
        return 0
    if len(argv) == 2 and argv[0] == "compare":
        before = json.loads(Path(argv[1]).read_text())
        now = snapshot()
        new_procs = {k: v for k, v in now["processes"].items() if k not in before["processes"]}  # type: ignore[union-attr]
        new_mounts = sorted(set(now["mounts"]) - set(before["mounts"]))  # type: ignore[arg-type]
        new_listeners = sorted(set(now["listeners"]) - set(before["listeners"]))  # type: ignore[arg-type]
        for pid, cmd in new_procs.items():
            print(f"left running: pid {pid.split('@')[0]}: {cmd}")
        for m in new_mounts:
            print(f"left mounted: {m}")
        for s in new_listeners:
            print(f"left listening: {s}")
        if new_procs or new_mounts or new_listeners:
            return 1
        print("nothing left behind: no new process, mount or listener")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

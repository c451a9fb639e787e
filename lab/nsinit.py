"""PID 1 of one simulated host. Runs under ``unshare --mount --pid --fork --mount-proc``.

Usage: ``python3 -IS nsinit.py HOSTDIR PARENT_MNT_NS``. Standard library only, no imports from the
lab package: it runs before anything else exists in the namespace.

It builds the host's root (an overlay of the machine's ``/`` whose upper layer is a tmpfs seeded
from ``HOSTDIR/seed``), starts Exim and the simulated tailwatchd inside it, serves the command
journal on an abstract unix socket (outside the host's filesystem), then runs sshd chrooted into
the host root and reaps orphans until sshd exits or it is killed. Every mount lives and dies with
this namespace; killing this process kills every process of the host.
"""

from __future__ import annotations

import ctypes
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

MS_RDONLY = 1
MS_BIND = 4096
MS_REC = 16384

_libc = ctypes.CDLL(None, use_errno=True)


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    rc = _libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def log(msg: str) -> None:
    print(f"nsinit: {msg}", file=sys.stderr, flush=True)


def build_root(hostdir: str) -> str:
    ovl = os.path.join(hostdir, "ovl")
    root = os.path.join(hostdir, "root")
    mount("tmpfs", ovl, "tmpfs", 0, "mode=0755,size=256m")
    os.mkdir(os.path.join(ovl, "upper"), 0o755)
    os.mkdir(os.path.join(ovl, "work"), 0o755)
    subprocess.run(["cp", "-a", os.path.join(hostdir, "seed") + "/.", os.path.join(ovl, "upper")], check=True)
    mount(
        "overlay",
        root,
        "overlay",
        0,
        f"lowerdir=/,upperdir={ovl}/upper,workdir={ovl}/work",
    )
    mount("proc", os.path.join(root, "proc"), "proc")
    mount("/dev", os.path.join(root, "dev"), None, MS_BIND | MS_REC)
    mount("tmpfs", os.path.join(root, "run"), "tmpfs", 0, "mode=0755,size=16m")
    mount("tmpfs", os.path.join(root, "tmp"), "tmpfs", 0, "mode=1777,size=64m")
    os.mkdir(os.path.join(root, "run", "sshd"), 0o755)
    return root


def in_root(root: str, argv: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["chroot", root, *argv], check=False, input=stdin)


def listening(address: str, port: int) -> bool:
    want = "".join(f"{int(o):02X}" for o in reversed(address.split("."))) + f":{port:04X}"
    with open("/proc/net/tcp") as fh:
        return any(line.split()[1] == want and line.split()[3] == "0A" for line in fh.readlines()[1:])


def wait_until(pred: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def seed_queue(root: str, count: int, sender: str) -> None:
    message = b"Subject: queued by the lab\n\nhello\n"
    for i in range(count):
        in_root(root, ["/usr/sbin/exim4", "-odq", "-f", sender, f"queued{i}@example.net"], stdin=message)


def join_cgroup(procs: str) -> None:
    """Move this process into the cgroup whose ``cgroup.procs`` is ``procs`` (see lab/cpu.py)."""
    if procs:
        with open(procs, "w") as fh:
            fh.write("0")


def main() -> int:
    hostdir, parent_ns = sys.argv[1], sys.argv[2]
    os.chdir(hostdir)
    if os.getpid() != 1 or os.readlink("/proc/self/ns/mnt") == parent_ns:
        log("refusing to mount: not in a new PID and mount namespace")
        return 3
    with open(os.path.join(hostdir, "boot.json")) as fh:
        cfg = json.load(fh)
    # Everything forked from here on (Exim, the simulated tools, sshd and its sessions) is billed to
    # the host's cgroup; the init leaves it once they run, so its own bookkeeping is not.
    join_cgroup(cfg.get("cgroup_host", ""))
    root = build_root(hostdir)

    journal = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    journal.bind("\0" + cfg["journal_socket"])
    journal.listen(64)
    journal.setblocking(False)
    journal_file = open(os.path.join(hostdir, "journal.jsonl"), "a", buffering=1)  # noqa: SIM115

    seed_queue(root, int(cfg["queue_size"]), str(cfg["mailbox"]))
    if cfg["start_exim"]:
        # Exim does not detach when its parent is PID 1, so it stays our child and we reap it.
        subprocess.Popen(["chroot", root, "/usr/sbin/exim4", "-bd", "-q1h"], stdin=subprocess.DEVNULL)
        if not wait_until(lambda: listening(cfg["address"], 25), 5):
            log("exim did not start listening")
    if cfg["boot_sim"]:
        in_root(
            root,
            ["/usr/bin/python3", "-IS", "-c", 'import sys; sys.path.insert(0, "/opt/cpanel-sim"); '
             "import simlib; simlib.boot()"],
        )
    sshd_log = open(os.path.join(hostdir, "sshd.log"), "ab")  # noqa: SIM115
    sshd = subprocess.Popen(
        ["chroot", root, "/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/sshd_config"],
        stdin=subprocess.DEVNULL,
        stdout=sshd_log,
        stderr=sshd_log,
    )
    join_cgroup(cfg.get("cgroup_init", ""))

    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    sel = selectors.DefaultSelector()
    sel.register(journal, selectors.EVENT_READ)
    while not stop:
        for key, _ in sel.select(timeout=0.2):
            if key.fileobj is journal:
                try:
                    conn, _addr = journal.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(True)
                conn.settimeout(2)
                try:
                    data = b""
                    while not data.endswith(b"\n"):
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if data.strip():
                        record = json.loads(data)
                        record["received"] = time.time()
                        journal_file.write(json.dumps(record) + "\n")
                        conn.sendall(b"ok\n")
                except (OSError, ValueError) as exc:
                    log(f"journal: {exc}")
                finally:
                    conn.close()
        # Reap every orphan: daemons started over SSH end up as our children.
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == sshd.pid:
                log("sshd exited")
                stop = True
    return 0


if __name__ == "__main__":
    sys.exit(main())

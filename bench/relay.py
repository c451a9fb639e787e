"""A userspace TCP relay that adds round-trip time, for the fleet benchmark's WAN mode.

The kernel here has no netem, so latency is made in userspace. The benchmark creates a network
namespace for the clients; in it, nothing but this relay listens. The relay binds one listener per lab
host address (port 22) *inside* that namespace, then switches back to the machine's namespace for its
upstream connections to the real lab hosts (a socket keeps the namespace it was made in). A client in
the namespace connecting to ``127.N.0.x:22`` therefore reaches the lab host through the relay, with
the addresses, and so the pinned host keys, unchanged.

Delay model, with one-way delay d = RTT/2:
- every chunk read from either side is written to the other side d after it was read, in order;
- the TCP handshake: the upstream connection is opened 3d after the client's connect returned, so the
  server's first byte reaches the client 4d = 2 RTT after the client started, as over a real link
  (SYN, SYN-ACK, ACK, then the server's banner); the client's first bytes reach the server no earlier.
- both legs use TCP_NODELAY, so the relay adds no Nagle delays of its own.

    python -m bench.relay --netns /run/netns/NAME --delay-ms 25 ADDRESS...

Prints ``ready`` on stdout once every listener is up; runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys

PORT = 22


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _pipe(reader: asyncio.StreamReader, writer_ready: asyncio.Future[asyncio.StreamWriter],
                delay: float) -> None:
    """Copy reader to the writer (once it exists), each chunk ``delay`` after it was read."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        while True:
            try:
                data = await reader.read(65536)
            except OSError:
                data = b""
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                return

    async def write() -> None:
        writer = await writer_ready
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            writer.write(data)
            try:
                await writer.drain()
            except OSError:
                return

    await asyncio.gather(read(), write())


async def _relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, address: str,
                 delay: float) -> None:
    _nodelay(client_w)
    loop = asyncio.get_running_loop()
    upstream: asyncio.Future[asyncio.StreamWriter] = loop.create_future()
    to_client: asyncio.Future[asyncio.StreamWriter] = loop.create_future()
    to_client.set_result(client_w)
    # Client bytes are read (and time-stamped) from the start; they wait for the upstream leg.
    forward = asyncio.ensure_future(_pipe(client_r, upstream, delay))
    try:
        await asyncio.sleep(3 * delay)
        server_r, server_w = await asyncio.open_connection(address, PORT)
        _nodelay(server_w)
        upstream.set_result(server_w)
        await asyncio.gather(forward, _pipe(server_r, to_client, delay))
    except OSError:
        forward.cancel()
    finally:
        client_w.close()
        if upstream.done():
            upstream.result().close()


async def serve(netns: str, addresses: list[str], delay: float) -> None:
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(netns, os.O_RDONLY)
    listeners = []
    os.setns(target, os.CLONE_NEWNET)
    try:
        for address in addresses:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, PORT))
            sock.listen(1024)
            listeners.append((address, sock))
    finally:
        # Upstream sockets (and any thread) are made from here on, in the machine's namespace.
        os.setns(home, os.CLONE_NEWNET)
        os.close(home)
        os.close(target)
    servers = []
    for address, sock in listeners:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter, address: str = address) -> None:
            await _relay(r, w, address, delay)

        servers.append(await asyncio.start_server(handle, sock=sock))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--netns", required=True, help="path of the clients' network namespace")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay (half the RTT)")
    parser.add_argument("addresses", nargs="+")
    args = parser.parse_args()
    asyncio.run(serve(args.netns, args.addresses, args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())

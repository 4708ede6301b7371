"""A bad network between the control machine and lab nodes, without netem (this kernel has no sch_netem):
random packet loss with iptables' `statistic` match on the lab bridge, and latency from a relay that
holds every chunk of an SSH stream for a fixed time in each direction, in order."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

LOSS_COMMENT = "kprov-test-loss"


@contextmanager
def packet_loss(bridge: str, probability: float) -> Iterator[None]:
    rules = [["INPUT", "-i", bridge], ["OUTPUT", "-o", bridge]]
    tail = [
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        str(probability),
        "-m",
        "comment",
        "--comment",
        LOSS_COMMENT,
        "-j",
        "DROP",
    ]
    for r in rules:
        subprocess.run(["iptables", "-I", *r, *tail], check=True)
    try:
        yield
    finally:
        for r in rules:
            subprocess.run(["iptables", "-D", *r, *tail], check=False)


class DelayRelay:
    """127.0.0.1:<port> -> (address, 22) for each target, `delay_s` added in each direction."""

    def __init__(self, targets: dict[str, str], delay_s: float) -> None:
        self.targets = targets
        self.delay_s = delay_s
        self.ports: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: list[asyncio.AbstractServer] = []

    def __enter__(self) -> DelayRelay:
        self._thread.start()
        for name, address in self.targets.items():
            server = asyncio.run_coroutine_threadsafe(self._serve(address), self._loop).result(10)
            self._servers.append(server)
            self.ports[name] = server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            for s in self._servers:
                s.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _serve(self, address: str) -> asyncio.AbstractServer:
        async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
            try:
                node_r, node_w = await asyncio.open_connection(address, 22)
            except OSError:
                client_w.close()
                return
            await asyncio.gather(self._pump(client_r, node_w), self._pump(node_r, client_w))

        return await asyncio.start_server(handle, "127.0.0.1", 0)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(65536)
                await queue.put((time.monotonic() + self.delay_s, data))
                if not data:
                    break
        except (ConnectionError, OSError):
            await queue.put((time.monotonic(), b""))
        try:
            await sender
        except (ConnectionError, OSError):
            pass

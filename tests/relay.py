"""A relay that makes loopback behave like a slow link, for tests of what round trips cost.

Modelled on the relay of ``shared/bench/wan_bench.py``: every byte is
delivered ``one_way`` seconds late in each direction, and a new connection
carries nothing before its TCP handshake would have completed on a real
link (the client's first bytes arrive no sooner than 3 one-way delays after
it connected, the server's no sooner than 4).  Runs its own asyncio loop in
a thread; listens on an OS-chosen port of 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import threading

from tests.processes import TIMEOUT


class SlowLink:
    """127.0.0.1:``port`` relays to 127.0.0.1:``target`` with a round-trip time of ``rtt`` seconds."""

    def __init__(self, target: int, rtt: float) -> None:
        self.target = target
        self.one_way = rtt / 2
        self._writers: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._started.wait(TIMEOUT):
            raise RuntimeError("the relay did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._relay, "127.0.0.1", 0, backlog=1024))
        self.port: int = self.server.sockets[0].getsockname()[1]
        self._started.set()
        self.loop.run_forever()

    async def _relay(self, client_reader, client_writer) -> None:
        opened = self.loop.time()
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            client_writer.close()
            return
        self._writers |= {client_writer, server_writer}
        await asyncio.gather(
            self._pump(client_reader, server_writer, opened + 2 * self.one_way),
            self._pump(server_reader, client_writer, opened + 3 * self.one_way),
            return_exceptions=True,
        )
        for writer in (client_writer, server_writer):
            writer.close()
            self._writers.discard(writer)

    async def _pump(self, reader, writer, not_before: float) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if (wait := due - self.loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        delivering = asyncio.ensure_future(deliver())
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except OSError:
                    data = b""
                queue.put_nowait((max(self.loop.time(), not_before) + self.one_way, data))
                if not data:
                    break
            await delivering
        except OSError:
            pass
        finally:
            delivering.cancel()

    def close(self) -> None:
        """Stop relaying: every connection through the relay is closed."""
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(TIMEOUT)
        self.loop.close()

    async def _close(self) -> None:
        self.server.close()
        for writer in self._writers:
            writer.transport.abort()  # the pumps see their readers end, and finish
        relaying = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if relaying:
            await asyncio.wait(relaying, timeout=TIMEOUT)

"""End-to-end test with a Python SignalR client from PyPI (pysignalr) against the e2e server.

Echo (a result), a broadcast reaching two clients, and a server-to-client stream, over
WebSockets with the JSON protocol. Run with the e2e server built:

    python -m unittest e2e/python/test_pysignalr.py

E2E_SERVER_BIN overrides the server binary (default: target/debug/e2e-server).
"""

import asyncio
import os
import re
import subprocess
import unittest
from pathlib import Path

from pysignalr.client import SignalRClient

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("E2E_SERVER_BIN", REPO_ROOT / "target" / "debug" / "e2e-server"))
WAIT = 10  # seconds: bound of every wait


def start_server():
    if not BIN.is_file():
        raise RuntimeError(f"e2e-server binary not found at {BIN}: run `cargo build -p e2e-server` first")
    proc = subprocess.Popen(
        [str(BIN), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    match = re.match(r"^listening on (http://127\.0\.0\.1:\d+)\s*$", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"e2e-server did not start: {line!r} {proc.stderr.read()}")
    return proc, match.group(1) + "/test"


class PysignalrTest(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc, cls.url = start_server()

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        try:
            cls.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            cls.proc.kill()

    async def connected(self, on_setup=None):
        """A started client; cancelled at the end of the test."""
        client = SignalRClient(self.url, retry_count=1)
        opened = asyncio.Event()

        async def on_open():
            opened.set()

        client.on_open(on_open)
        if on_setup:
            on_setup(client)
        task = asyncio.create_task(client.run())
        self.addAsyncCleanup(self.cancel, task)
        await asyncio.wait_for(opened.wait(), WAIT)
        return client

    @staticmethod
    async def cancel(task):
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass

    async def invoke(self, client, method, arguments):
        done = asyncio.get_running_loop().create_future()

        async def on_completion(message):
            if not done.done():
                done.set_result(message)

        await client.send(method, arguments, on_completion)
        return await asyncio.wait_for(done, WAIT)

    async def test_echo(self):
        client = await self.connected()
        completion = await self.invoke(client, "Echo", ["héllo from python"])
        self.assertIsNone(completion.error)
        self.assertEqual(completion.result, "héllo from python")

    async def test_broadcast_reaches_every_client(self):
        inboxes = [asyncio.Queue(), asyncio.Queue()]

        def listen(inbox):
            def setup(client):
                async def on_message(arguments):
                    await inbox.put(arguments)

                client.on("message", on_message)

            return setup

        first = await self.connected(listen(inboxes[0]))
        await self.connected(listen(inboxes[1]))
        await first.send("Broadcast", ["to everyone"])
        for inbox in inboxes:
            arguments = await asyncio.wait_for(inbox.get(), WAIT)
            self.assertEqual(arguments, ["to everyone"])

    async def test_server_stream(self):
        client = await self.connected()
        items = []
        done = asyncio.get_running_loop().create_future()

        async def on_next(item):
            items.append(item)

        async def on_complete(message):
            if not done.done():
                done.set_result(message)

        async def on_error(message):
            if not done.done():
                done.set_exception(AssertionError(f"stream failed: {message.error}"))

        await client.stream("Counter", [4, 5], on_next, on_complete, on_error)
        await asyncio.wait_for(done, WAIT)
        self.assertEqual(items, [0, 1, 2, 3])


if __name__ == "__main__":
    unittest.main()

// Stateful reconnect with the official JS client: the TCP connection under a live WebSocket
// is killed (through a proxy), the client resumes on a new socket with the same connection,
// and every message in both directions is counted: none lost, none twice.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { HttpTransportType, HubConnectionBuilder, HubConnectionState, LogLevel } from '@microsoft/signalr';
import { MessagePackHubProtocol } from '@microsoft/signalr-protocol-msgpack';
import { REPO_ROOT, startChat } from '../lib/server.mjs';
import { startProxy } from '../lib/proxy.mjs';
import { withTimeout, WAIT_MS } from '../lib/client.mjs';

const BIN = process.env.E2E_SERVER_BIN ?? path.join(REPO_ROOT, 'target', 'debug', 'e2e-server');

let server;
let proxy;
let startError;
const open = [];
before(async () => {
  try {
    server = await startChat([], { bin: BIN, hubPath: '/test' });
    proxy = await startProxy(server.port);
  } catch (error) {
    startError = error;
  }
});
after(async () => {
  await Promise.allSettled(open.map((c) => c.stop()));
});
after(async () => {
  await proxy?.close();
  await server?.stop();
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function eventually(check, what) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(20);
  }
}

for (const protocol of ['json', 'messagepack']) {
  describe(`stateful reconnect, ${protocol}`, () => {
    test('nothing lost and nothing twice across a killed TCP connection', { timeout: 30_000 }, async () => {
      if (startError) throw startError;
      const builder = new HubConnectionBuilder()
        .withUrl(proxy.url('/test'), { transport: HttpTransportType.WebSockets })
        .withStatefulReconnect()
        .configureLogging(LogLevel.Critical);
      if (protocol === 'messagepack') builder.withHubProtocol(new MessagePackHubProtocol());
      const connection = builder.build();
      open.push(connection);
      const received = [];
      connection.on('n', (n) => received.push(n));
      let closed = false;
      connection.onclose(() => {
        closed = true;
      });
      await withTimeout(connection.start(), WAIT_MS, 'start');
      const connectionId = connection.connectionId;

      const COUNT = 300;
      await connection.invoke('StartNumbers', COUNT, 2);
      // Client to server: numbers sent while the socket is cut under them.
      let sent = 0;
      const sending = (async () => {
        for (; sent < COUNT; sent++) {
          await connection.send('Record', sent);
          await sleep(2);
        }
      })();

      await eventually(() => received.length >= COUNT / 3, 'a third of the numbers');
      const before = proxy.connections();
      assert.ok(proxy.cut() >= 1, 'a connection was cut');
      await eventually(() => proxy.connections() > before, 'the client opened a new socket');
      await eventually(() => received.length >= COUNT, 'every number');
      await sending;

      assert.equal(closed, false, 'the connection never closed');
      assert.equal(connection.state, HubConnectionState.Connected);
      assert.equal(connection.connectionId, connectionId, 'the same connection');
      assert.deepEqual(received, Array.from({ length: COUNT }, (_, i) => i), 'server to client');
      await eventually(async () => (await connection.invoke('Recorded')).length >= COUNT, 'all recorded');
      assert.deepEqual(
        await connection.invoke('Recorded'),
        Array.from({ length: COUNT }, (_, i) => i),
        'client to server',
      );
    });
  });
}

// What an operator sees of the chat sample while the official client is connected:
// GET /metrics (Prometheus text) counts the connections by transport and protocol and the
// invocations; GET /healthz reports the hub and its backplane, and answers 503 once the
// Redis backplane is gone.

import assert from 'node:assert/strict';
import { after, afterEach, describe, it } from 'node:test';

import { WAIT_MS, clientScope, uniqueId, withTimeout } from '../lib/client.mjs';
import { startChat } from '../lib/server.mjs';
import { startRedis } from '../lib/redis.mjs';

const TEST = { timeout: 30_000 };
const HUB = 'Chat.Hubs.ChatHub';

/** The value of `name{labels}` in a Prometheus text body, or undefined. */
function sample(text, name, labels = {}) {
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (!rest.startsWith('{') && !rest.startsWith(' ')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) {
      return Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return undefined;
}

async function get(url) {
  const response = await withTimeout(fetch(url), WAIT_MS, `GET ${url}`);
  return { status: response.status, type: response.headers.get('content-type'), body: await response.text() };
}

/** Polls `check` until it returns true (bounded). */
async function eventually(check, what) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) assert.fail(`not within ${WAIT_MS} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('observability of the chat sample', () => {
  const clients = clientScope();
  const servers = [];
  afterEach(() => clients.stopAll());
  after(async () => {
    await clients.stopAll();
    for (const server of servers) await server.stop();
  });

  it('/metrics and /healthz count the connected clients', TEST, async () => {
    const server = await startChat();
    servers.push(server);
    const combos = [
      { transport: 'WebSockets', protocol: 'json' },
      { transport: 'WebSockets', protocol: 'messagepack' },
      { transport: 'ServerSentEvents', protocol: 'json' },
      { transport: 'LongPolling', protocol: 'messagepack' },
    ];
    const connected = [];
    for (const combo of combos) connected.push(await clients.connect(server.hubUrl, combo));
    for (const client of connected) assert.equal(await client.invoke('Echo', 'hi'), 'hi');
    const name = uniqueId('metrics');
    await connected[0].invoke('Send', name, 'to everyone');
    for (const client of connected) await client.waitForMessagesFrom(name, 1);

    const metrics = await get(`${server.url}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(metrics.type, /^text\/plain/);
    const hub = { hub: HUB };
    const expected = [
      ['WebSockets', 'json'],
      ['WebSockets', 'messagepack'],
      ['ServerSentEvents', 'json'],
      ['LongPolling', 'messagepack'],
    ];
    for (const [transport, protocol] of expected) {
      assert.equal(
        sample(metrics.body, 'signalr_connections', { ...hub, transport, protocol }),
        1,
        `signalr_connections ${transport} ${protocol}:\n${metrics.body}`,
      );
    }
    assert.equal(sample(metrics.body, 'signalr_connections_opened_total', hub), 4);
    assert.equal(sample(metrics.body, 'signalr_invocations_total', hub), 5);
    assert.equal(sample(metrics.body, 'signalr_invocation_errors_total', hub), 0);
    assert.ok(sample(metrics.body, 'signalr_messages_sent_total', hub) >= 4 + 5 + 4);
    for (const transport of ['WebSockets', 'ServerSentEvents', 'LongPolling']) {
      assert.ok(sample(metrics.body, 'signalr_bytes_sent_total', { ...hub, transport }) > 0, transport);
    }

    const health = await get(`${server.url}/healthz`);
    assert.equal(health.status, 200, health.body);
    const report = JSON.parse(health.body);
    assert.equal(report.status, 'ok');
    assert.equal(report.hubs.length, 1);
    assert.equal(report.hubs[0].name, HUB);
    assert.equal(report.hubs[0].connections, 4);
    assert.equal(report.hubs[0].lifetime_manager.kind, 'in-memory');

    // Clients that leave are counted out.
    await clients.stopAll();
    await eventually(async () => {
      const body = (await get(`${server.url}/metrics`)).body;
      return (
        sample(body, 'signalr_connections_closed_total', hub) === 4 &&
        expected.every(
          ([transport, protocol]) =>
            sample(body, 'signalr_connections', { ...hub, transport, protocol }) === 0,
        )
      );
    }, 'every connection counted out');
    const after = JSON.parse((await get(`${server.url}/healthz`)).body);
    assert.equal(after.hubs[0].connections, 0);
  });

  it('/healthz reports the Redis backplane, and 503 once Redis is gone', TEST, async () => {
    const redis = await startRedis();
    let stopped = false;
    try {
      const server = await startChat(['--redis', redis.url]);
      servers.push(server);
      const client = await clients.connect(server.hubUrl, { protocol: 'json' });
      let health = await get(`${server.url}/healthz`);
      assert.equal(health.status, 200, health.body);
      let manager = JSON.parse(health.body).hubs[0].lifetime_manager;
      assert.equal(manager.kind, 'redis');
      assert.equal(manager.backplane, true);
      assert.equal(manager.connected, true);
      assert.equal(typeof manager.since_unix_seconds, 'number');
      const metrics = (await get(`${server.url}/metrics`)).body;
      assert.equal(sample(metrics, 'signalr_backplane_connected', { hub: HUB }), 1);

      await redis.stop();
      stopped = true;
      await eventually(async () => (await get(`${server.url}/healthz`)).status === 503, 'healthz 503');
      health = await get(`${server.url}/healthz`);
      const report = JSON.parse(health.body);
      assert.equal(report.status, 'unhealthy');
      manager = report.hubs[0].lifetime_manager;
      assert.equal(manager.connected, false);
      assert.match(manager.detail, /down/);
      assert.equal(
        sample((await get(`${server.url}/metrics`)).body, 'signalr_backplane_connected', { hub: HUB }),
        0,
      );
      // The node still serves its own connection.
      assert.equal(await client.invoke('Echo', 'local'), 'local');
      server.assertAlive();
    } finally {
      if (!stopped) await redis.stop();
    }
  });
});

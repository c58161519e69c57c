// The official Node client (@microsoft/signalr 10.0.x) against the chat example over every
// transport: WebSockets, Server-Sent Events and long polling, with JSON and MessagePack
// (SSE carries text only, so JSON only). Also: clients on different transports talking to
// each other, the client's fallback when WebSockets is off, bearer-token authentication, and
// the graceful shutdown as a client with automatic reconnect sees it.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import {
  HubConnectionState,
  LogLevel,
  WAIT_MS,
  clientScope,
  connect,
  expectOversizeClose,
  uniqueId,
  withTimeout,
} from '../lib/client.mjs';
import { sharedChat, startChat } from '../lib/server.mjs';
import { LARGE_TEXT, UNICODE_TEXT, assertIncludes } from '../lib/values.mjs';

const TEST = { timeout: 20_000 };

/** Every transport × protocol the official client can use. */
const COMBOS = [
  { transport: 'WebSockets', protocol: 'json' },
  { transport: 'WebSockets', protocol: 'messagepack' },
  { transport: 'ServerSentEvents', protocol: 'json' },
  { transport: 'LongPolling', protocol: 'json' },
  { transport: 'LongPolling', protocol: 'messagepack' },
];

const chat = sharedChat();
const clients = clientScope();

before(() => chat.warmUp(), { timeout: 30_000 });
afterEach(async () => {
  await clients.stopAll();
  await chat.assertAlive();
});
after(async () => {
  await clients.stopAll();
  await chat.stop();
});

for (const combo of COMBOS) {
  describe(`${combo.transport}, ${combo.protocol}`, () => {
    async function open(options = {}) {
      const server = await chat.get();
      const client = await clients.connect(server.hubUrl, { ...combo, ...options });
      assert.equal(client.transport, combo.transport, `${client.label} is on another transport`);
      return client;
    }

    it('Echo returns its argument: ASCII, unicode and a 10 KB string', TEST, async () => {
      const client = await open();
      assert.equal(await client.invoke('Echo', 'hello'), 'hello');
      assert.equal(await client.invoke('Echo', ''), '');
      assert.equal(await client.invoke('Echo', UNICODE_TEXT), UNICODE_TEXT);
      assert.equal(await client.invoke('Echo', LARGE_TEXT), LARGE_TEXT);
      // Several invocations in flight at once: the client batches them into one send.
      const many = Array.from({ length: 20 }, (_, i) => `n${i}`);
      assert.deepEqual(await Promise.all(many.map((m) => client.invoke('Echo', m))), many);
    });

    it('Send reaches every connection, the sender included, exactly once', TEST, async () => {
      const all = await Promise.all([open(), open(), open()]);
      const name = uniqueId('sender');
      await all[0].invoke('Send', name, 'hello everyone');
      await all[1].send('Send', name, UNICODE_TEXT);
      for (const client of all) await client.waitForMessagesFrom(name, 2);
      await Promise.all(all.map((client) => client.barrier()));
      for (const client of all) {
        assert.deepEqual(
          client.messagesFrom(name).map((m) => m.message).sort(),
          ['hello everyone', UNICODE_TEXT].sort(),
        );
      }
    });

    it('groups: SendToGroup reaches members only, LeaveGroup stops delivery', TEST, async () => {
      const [member, leaver, outsider] = await Promise.all([open(), open(), open()]);
      const group = uniqueId('group');
      const name = uniqueId('sender');
      await member.invoke('JoinGroup', group);
      await leaver.invoke('JoinGroup', group);
      await outsider.invoke('SendToGroup', group, name, 'first');
      await member.waitForMessagesFrom(name, 1);
      await leaver.waitForMessagesFrom(name, 1);
      await leaver.invoke('LeaveGroup', group);
      await outsider.invoke('SendToGroup', group, name, 'second');
      await member.waitForMessagesFrom(name, 2);
      await Promise.all([leaver.barrier(), outsider.barrier()]);
      assert.deepEqual(leaver.messagesFrom(name).map((m) => m.message), ['first']);
      assert.deepEqual(outsider.messagesFrom(name), []);
    });

    it('SendToUser reaches the connections of that user only', TEST, async () => {
      const user = uniqueId('user');
      const [target, other] = await Promise.all([open({ user }), open()]);
      const name = uniqueId('sender');
      await other.invoke('SendToUser', user, name, 'direct');
      await target.waitForMessagesFrom(name, 1);
      await other.barrier();
      assert.deepEqual(other.messagesFrom(name), []);
    });

    it('hub errors reject the invocation; the connection stays usable', TEST, async () => {
      const client = await open();
      await assert.rejects(client.invoke('Nope'), (err) => {
        assertIncludes(err.message, "Unknown hub method 'Nope'");
        return true;
      });
      await assert.rejects(client.invoke('Echo', 'one', 'two'), (err) => {
        assertIncludes(err.message, 'provides 2 argument(s)');
        return true;
      });
      await client.send('Nope', 'ignored');
      assert.equal(await client.invoke('Echo', 'still here'), 'still here');
      assert.equal(client.state, HubConnectionState.Connected);
    });

    it('a message over the maximum size closes that connection only', TEST, async () => {
      const bystander = await open();
      const offender = await open({ logLevel: LogLevel.None });
      const fine = 'y'.repeat(20_000);
      assert.equal(await offender.invoke('Echo', fine), fine);
      await expectOversizeClose(offender, 'x'.repeat(40_000));
      assert.equal(await bystander.invoke('Echo', 'unaffected'), 'unaffected');
    });
  });
}

describe('across transports', () => {
  it('clients on every transport receive each other’s Send exactly once', TEST, async () => {
    const server = await chat.get();
    const all = await Promise.all(COMBOS.map((combo) => clients.connect(server.hubUrl, combo)));
    const names = all.map(() => uniqueId('from'));
    await Promise.all(all.map((client, i) => client.invoke('Send', names[i], client.label)));
    for (const client of all) {
      for (const [i, name] of names.entries()) {
        await client.waitForMessagesFrom(name, 1);
        assert.deepEqual(client.messagesFrom(name), [{ name, message: all[i].label }]);
      }
    }
    await Promise.all(all.map((client) => client.barrier()));
    for (const client of all) {
      for (const name of names) assert.equal(client.messagesFrom(name).length, 1, client.label);
    }
  });
});

describe('transport fallback', () => {
  it('with WebSockets disabled the client falls back to SSE (JSON) or long polling (MessagePack)', TEST, async () => {
    const server = await startChat(['--transports', 'ServerSentEvents,LongPolling']);
    const open = [];
    try {
      const negotiate = await fetch(`${server.hubUrl}/negotiate?negotiateVersion=1`, { method: 'POST' });
      assert.equal(negotiate.status, 200);
      const offered = (await negotiate.json()).availableTransports.map((t) => t.transport);
      assert.deepEqual(offered, ['ServerSentEvents', 'LongPolling']);

      const json = await connect(server.hubUrl, { transport: 'auto', protocol: 'json' });
      open.push(json);
      assert.equal(json.transport, 'ServerSentEvents');
      const msgpack = await connect(server.hubUrl, { transport: 'auto', protocol: 'messagepack' });
      open.push(msgpack);
      assert.equal(msgpack.transport, 'LongPolling');
      const name = uniqueId('fallback');
      await json.invoke('Send', name, 'hi');
      await msgpack.waitForMessagesFrom(name, 1);
      assert.equal(await msgpack.invoke('Echo', UNICODE_TEXT), UNICODE_TEXT);

      // Insisting on WebSockets fails: negotiate does not offer it, and the upgrade is 404.
      await assert.rejects(
        connect(server.hubUrl, { transport: 'WebSockets', logLevel: LogLevel.None }),
      );
      await assert.rejects(
        connect(server.hubUrl, { skipNegotiation: true, logLevel: LogLevel.None }),
      );
    } finally {
      await Promise.all(open.map((client) => client.stop()));
      await server.stop();
    }
  });
});

describe('authentication', () => {
  const secured = sharedChat(['--auth-tokens', 'alice=alice-secret,bob=bob-secret']);
  before(() => secured.warmUp(), { timeout: 30_000 });
  after(() => secured.stop());

  it('start fails without a token or with a wrong one (401)', TEST, async () => {
    const server = await secured.get();
    for (const accessToken of [undefined, 'not-a-token']) {
      await assert.rejects(
        connect(server.hubUrl, { transport: 'auto', accessToken, logLevel: LogLevel.None }),
        (err) => {
          assertIncludes(err.message, '401');
          return true;
        },
      );
    }
  });

  it('the user id comes from the token on every transport, not from the query', TEST, async () => {
    const server = await secured.get();
    for (const combo of COMBOS) {
      // The `user` query parameter is ignored once the hub authenticates.
      const alice = await clients.connect(server.hubUrl, {
        ...combo,
        accessToken: 'alice-secret',
        user: 'mallory',
      });
      const bob = await clients.connect(server.hubUrl, {
        transport: 'LongPolling',
        accessToken: 'bob-secret',
      });
      const name = uniqueId('sender');
      await bob.invoke('SendToUser', 'alice', name, `to alice over ${combo.transport}`);
      await bob.invoke('SendToUser', 'mallory', name, 'to nobody');
      await alice.waitForMessagesFrom(name, 1);
      await Promise.all([alice.barrier(), bob.barrier()]);
      assert.deepEqual(alice.messagesFrom(name), [
        { name, message: `to alice over ${combo.transport}` },
      ]);
      await clients.stopAll();
    }
  });
});

describe('graceful shutdown', () => {
  it('SIGTERM: every client is told to reconnect, the server exits 0; a new server takes over', TEST, async () => {
    const first = await startChat();
    const open = [];
    try {
      const watched = [];
      for (const combo of COMBOS) {
        const client = await connect(first.hubUrl, {
          ...combo,
          reconnect: true,
          logLevel: LogLevel.None,
        });
        open.push(client);
        watched.push(client);
      }
      const status = await first.stop();
      assert.equal(status.signal, null, `chat did not exit by itself; stderr:\n${first.stderr()}`);
      assert.equal(status.code, 0, `chat exited with ${status.code}; stderr:\n${first.stderr()}`);
      for (const client of watched) {
        const error = await withTimeout(client.reconnecting, WAIT_MS, `${client.label}: onreconnecting`);
        assert.ok(error instanceof Error, `${client.label}: onreconnecting without an error`);
        assertIncludes(error.message, 'Server is shutting down.');
      }

      // Clients that reconnect go to wherever the hub lives now.
      const second = await startChat();
      try {
        const client = await connect(second.hubUrl, { transport: 'auto' });
        open.push(client);
        assert.equal(await client.invoke('Echo', 'new home'), 'new home');
      } finally {
        await Promise.all(open.map((client) => client.stop()));
        await second.stop();
      }
    } finally {
      await Promise.all(open.map((client) => client.stop()));
      await first.stop();
    }
  });
});

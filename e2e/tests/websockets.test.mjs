// The official Node client (@microsoft/signalr 10.0.x) against the chat example, over
// WebSockets, for each of {json, messagepack} x {negotiate, skipNegotiation}.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import {
  COMBOS,
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
  describe(`websockets, ${combo.label}`, () => {
    /** Opens a tracked connection with this combo's protocol and negotiation mode. */
    async function open(options = {}) {
      const server = await chat.get();
      return clients.connect(server.hubUrl, {
        protocol: combo.protocol,
        skipNegotiation: combo.skipNegotiation,
        ...options,
      });
    }

    it('Echo returns its argument: ASCII, unicode and a 10 KB string', TEST, async () => {
      const client = await open();
      assert.equal(await client.invoke('Echo', 'hello'), 'hello');
      assert.equal(await client.invoke('Echo', ''), '');
      assert.equal(await client.invoke('Echo', UNICODE_TEXT), UNICODE_TEXT);
      assert.equal(await client.invoke('Echo', LARGE_TEXT), LARGE_TEXT);
      // Hub method names are matched case-insensitively, as in ASP.NET Core.
      assert.equal(await client.invoke('echo', 'lower case'), 'lower case');
      assert.equal(await client.invoke('ECHO', 'upper case'), 'upper case');
    });

    it('Send reaches every connection, the sender included, exactly once', TEST, async () => {
      const all = await Promise.all([open(), open(), open()]);
      const [a, b] = all;
      const first = uniqueId('first');
      const second = uniqueId('second');

      // A blocking invocation (with an invocation id) ...
      await a.invoke('Send', first, 'hello everyone');
      // ... and a fire-and-forget one (no invocation id, no reply).
      await b.send('Send', second, UNICODE_TEXT);

      for (const client of all) {
        await client.waitForMessagesFrom(first, 1);
        await client.waitForMessagesFrom(second, 1);
      }
      // Anything else queued for these connections has now been delivered too.
      await Promise.all(all.map((client) => client.barrier()));
      for (const client of all) {
        assert.deepEqual(client.messagesFrom(first), [{ name: first, message: 'hello everyone' }]);
        assert.deepEqual(client.messagesFrom(second), [{ name: second, message: UNICODE_TEXT }]);
      }
    });

    it('groups: SendToGroup reaches members only, LeaveGroup stops delivery', TEST, async () => {
      const [a, b, outsider] = await Promise.all([open(), open(), open()]);
      const group = uniqueId('group');
      const name = uniqueId('sender');

      // JoinGroup and LeaveGroup are void: the Completion carries no result.
      assert.equal(await a.invoke('JoinGroup', group), undefined);
      // Joining twice is harmless: a group is a set of connections (as in ASP.NET Core).
      assert.equal(await a.invoke('JoinGroup', group), undefined);
      assert.equal(await b.invoke('JoinGroup', group), undefined);

      // A connection outside the group may send to it, and does not receive it.
      await outsider.invoke('SendToGroup', group, name, 'first');
      await a.waitForMessagesFrom(name, 1);
      await b.waitForMessagesFrom(name, 1);
      await Promise.all([a, b, outsider].map((client) => client.barrier()));
      assert.deepEqual(a.messagesFrom(name), [{ name, message: 'first' }]);
      assert.deepEqual(b.messagesFrom(name), [{ name, message: 'first' }]);
      assert.deepEqual(outsider.messagesFrom(name), []);

      // Once LeaveGroup has completed, b no longer receives the group's messages.
      assert.equal(await b.invoke('LeaveGroup', group), undefined);
      await a.invoke('SendToGroup', group, name, 'second');
      // a (still a member) gets the second message: the send really happened ...
      await a.waitForMessagesFrom(name, 2);
      // ... and after a round trip on b and on the outsider, neither has it.
      await Promise.all([b.barrier(), outsider.barrier()]);
      assert.deepEqual(
        a.messagesFrom(name).map((m) => m.message),
        ['first', 'second'],
      );
      assert.deepEqual(
        b.messagesFrom(name).map((m) => m.message),
        ['first'],
        'b received a group message after LeaveGroup completed',
      );
      assert.deepEqual(outsider.messagesFrom(name), []);
    });

    it('SendToUser reaches every connection of that user and nobody else', TEST, async () => {
      const [alice1, alice2, bob, anonymous] = await Promise.all([
        open({ user: 'alice' }),
        open({ user: 'alice' }),
        open({ user: 'bob' }),
        open(),
      ]);
      const everyone = [alice1, alice2, bob, anonymous];
      const name = uniqueId('sender');

      await bob.invoke('SendToUser', 'alice', name, 'hi alice');
      await alice1.waitForMessagesFrom(name, 1);
      await alice2.waitForMessagesFrom(name, 1);

      await alice1.invoke('SendToUser', 'bob', name, 'hi bob');
      await bob.waitForMessagesFrom(name, 1);

      await Promise.all(everyone.map((client) => client.barrier()));
      assert.deepEqual(alice1.messagesFrom(name), [{ name, message: 'hi alice' }]);
      assert.deepEqual(alice2.messagesFrom(name), [{ name, message: 'hi alice' }]);
      assert.deepEqual(bob.messagesFrom(name), [{ name, message: 'hi bob' }]);
      assert.deepEqual(anonymous.messagesFrom(name), []);
    });

    it('an unknown hub method rejects the invocation; the connection stays usable', TEST, async () => {
      const client = await open();
      await assert.rejects(client.invoke('Nope'), (err) => {
        assertIncludes(err.message, "Unknown hub method 'Nope'");
        return true;
      });
      // Without an invocation id the server must not answer at all (and must not close).
      await client.send('Nope', 'ignored');
      assert.equal(await client.invoke('Echo', 'still here'), 'still here');
      assert.equal(client.state, HubConnectionState.Connected);
    });

    it('a wrong argument count rejects the invocation; the connection stays usable', TEST, async () => {
      const client = await open();
      await assert.rejects(client.invoke('Echo', 'one', 'two'), (err) => {
        assertIncludes(err.message, 'provides 2 argument(s)');
        return true;
      });
      await assert.rejects(client.invoke('Echo'), (err) => {
        assertIncludes(err.message, 'provides 0 argument(s)');
        return true;
      });
      assert.equal(await client.invoke('Echo', 'still here'), 'still here');
      assert.equal(client.state, HubConnectionState.Connected);
    });

    it('a message over the maximum size closes that connection only', TEST, async () => {
      const bystander = await open();
      // This connection is expected to end with an error: keep its logger quiet.
      const offender = await open({ logLevel: LogLevel.None });

      // Below the default limit of 32768 bytes: fine.
      const fine = 'y'.repeat(20_000);
      assert.equal(await offender.invoke('Echo', fine), fine);

      // Above it: the server closes the connection with an error Close message, which
      // also rejects the pending invocation.
      await expectOversizeClose(offender, 'x'.repeat(40_000));

      // The other connection, and the server, are unaffected.
      assert.equal(await bystander.invoke('Echo', 'unaffected'), 'unaffected');
      const newcomer = await open();
      assert.equal(await newcomer.invoke('Echo', 'welcome'), 'welcome');
    });
  });
}

describe('chat binary', () => {
  it('--max-message-size sets the limit; SIGTERM stops the server and closes its connections', TEST, async () => {
    const server = await startChat(['--max-message-size', '1024']);
    const open = [];
    try {
      const json = await connect(server.hubUrl, { protocol: 'json', logLevel: LogLevel.None });
      open.push(json);
      const msgpack = await connect(server.hubUrl, {
        protocol: 'messagepack',
        skipNegotiation: true,
        logLevel: LogLevel.None,
      });
      open.push(msgpack);
      const survivor = await connect(server.hubUrl, { protocol: 'json', logLevel: LogLevel.None });
      open.push(survivor);

      const small = 's'.repeat(500);
      assert.equal(await json.invoke('Echo', small), small);
      assert.equal(await msgpack.invoke('Echo', small), small);

      for (const client of [json, msgpack]) {
        await expectOversizeClose(client, 'x'.repeat(2_000));
      }

      assert.equal(await survivor.invoke('Echo', 'ok'), 'ok');
      const status = await server.stop();
      assert.notEqual(
        status.signal,
        'SIGKILL',
        `chat did not exit within 5 s of SIGTERM; stderr:\n${server.stderr()}`,
      );
      // The open connection learns that the server went away.
      await withTimeout(survivor.closed, WAIT_MS, 'onclose after the server stopped');
      assert.equal(survivor.state, HubConnectionState.Disconnected);
    } finally {
      await Promise.all(open.map((client) => client.stop()));
      await server.stop();
    }
  });
});

// Two chat processes scaled out through Redis, with the official JS client connected to
// each: broadcasts, groups and users cross processes, in both protocols. Once on one
// redis-server with a password (classic pub/sub, the ASP.NET Core wire), once on a
// 3-master Redis Cluster in sharded mode (SPUBLISH/SSUBSCRIBE). Also: a wrong password
// stops the chat at start with a clear error.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import { clientScope, uniqueId } from '../lib/client.mjs';
import { startChat } from '../lib/server.mjs';
import { startRedis, startRedisCluster } from '../lib/redis.mjs';

const TEST = { timeout: 20_000 };
const SETUP = { timeout: 60_000 };
const PASSWORD = 'e2e-secret';

/** Checks broadcasts, groups and users between a client on node A and one on node B. */
function scaleoutCases(setup) {
  const clients = clientScope();
  afterEach(() => clients.stopAll());

  for (const [protocolA, protocolB] of [
    ['json', 'json'],
    ['messagepack', 'messagepack'],
    ['json', 'messagepack'],
  ]) {
    const label = `A ${protocolA}, B ${protocolB}`;

    it(`broadcasts cross nodes (${label})`, TEST, async () => {
      const { a, b } = setup();
      const onA = await clients.connect(a.hubUrl, { protocol: protocolA });
      const onB = await clients.connect(b.hubUrl, { protocol: protocolB });
      const fromA = uniqueId('from-a');
      const fromB = uniqueId('from-b');
      await onA.invoke('Send', fromA, 'hello from A');
      await onB.invoke('Send', fromB, 'hello from B');
      for (const client of [onA, onB]) {
        await client.waitForMessagesFrom(fromA, 1);
        await client.waitForMessagesFrom(fromB, 1);
      }
      assert.deepEqual(onB.messagesFrom(fromA), [{ name: fromA, message: 'hello from A' }]);
      assert.deepEqual(onA.messagesFrom(fromB), [{ name: fromB, message: 'hello from B' }]);
    });

    it(`groups cross nodes (${label})`, TEST, async () => {
      const { a, b } = setup();
      const group = uniqueId('room');
      const member = await clients.connect(b.hubUrl, { protocol: protocolB });
      const outsider = await clients.connect(b.hubUrl, { protocol: protocolB });
      const sender = await clients.connect(a.hubUrl, { protocol: protocolA });
      await member.invoke('JoinGroup', group);
      const name = uniqueId('group-sender');
      await sender.invoke('SendToGroup', group, name, 'to the room');
      const [got] = await member.waitForMessagesFrom(name, 1);
      assert.equal(got.message, 'to the room');
      await member.invoke('LeaveGroup', group);
      await sender.invoke('SendToGroup', group, name, 'after leaving');
      // Give a wrongly delivered group message time to show up: wait for a later broadcast.
      const marker = uniqueId('marker');
      await sender.invoke('Send', marker, 'marker');
      await member.waitForMessagesFrom(marker, 1);
      await outsider.waitForMessagesFrom(marker, 1);
      assert.equal(member.messagesFrom(name).length, 1, 'nothing after LeaveGroup');
      assert.equal(outsider.messagesFrom(name).length, 0, 'non-members get nothing');
    });

    it(`users cross nodes (${label})`, TEST, async () => {
      const { a, b } = setup();
      const user = uniqueId('alice');
      const onB = await clients.connect(b.hubUrl, { protocol: protocolB, user });
      const alsoOnA = await clients.connect(a.hubUrl, { protocol: protocolA, user });
      const sender = await clients.connect(a.hubUrl, { protocol: protocolA });
      const name = uniqueId('user-sender');
      await sender.invoke('SendToUser', user, name, 'for alice');
      for (const client of [onB, alsoOnA]) {
        const [got] = await client.waitForMessagesFrom(name, 1);
        assert.equal(got.message, 'for alice');
      }
      const marker = uniqueId('marker');
      await sender.invoke('Send', marker, 'marker');
      await sender.waitForMessagesFrom(marker, 1);
      assert.equal(sender.messagesFrom(name).length, 0);
    });
  }
}

describe('two chat processes on one redis-server', () => {
  let redis;
  let a;
  let b;
  before(async () => {
    redis = await startRedis({ password: PASSWORD });
    const flags = ['--redis', redis.url, '--channel-prefix', 'e2e:'];
    [a, b] = await Promise.all([startChat(flags), startChat(flags)]);
  }, SETUP);
  afterEach(() => {
    a?.assertAlive();
    b?.assertAlive();
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
  });

  scaleoutCases(() => ({ a, b }));

  it('a wrong password stops the chat at start, saying why', TEST, async () => {
    const url = `redis://:wrong@127.0.0.1:${redis.port}`;
    await assert.rejects(startChat(['--redis', url]), (err) => {
      assert.match(err.message, /exited before it was ready \(code 1/);
      assert.match(err.message, /cannot start the Redis backplane/);
      assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${redis.port}`));
      assert.match(err.message, /wrong password/);
      return true;
    });
  });
});

describe('two chat processes on a 3-master Redis Cluster, sharded pub/sub', () => {
  let cluster;
  let a;
  let b;
  before(async () => {
    cluster = await startRedisCluster(3);
    // Each node is seeded with a different cluster node; the cluster client finds the rest.
    [a, b] = await Promise.all([
      startChat(['--redis', cluster.nodes[0].url, '--redis-sharded']),
      startChat(['--redis', cluster.nodes[1].url, '--redis-sharded']),
    ]);
  }, SETUP);
  afterEach(() => {
    a?.assertAlive();
    b?.assertAlive();
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await cluster?.stop();
  });

  scaleoutCases(() => ({ a, b }));
});

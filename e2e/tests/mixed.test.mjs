// JSON and MessagePack connections on the same hub see each other's messages with the
// same values: the server must not leak one protocol's encoding into the other.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import { clientScope, uniqueId } from '../lib/client.mjs';
import { sharedChat } from '../lib/server.mjs';
import { LARGE_TEXT, UNICODE_TEXT } from '../lib/values.mjs';

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

const PAIRINGS = [
  {
    json: { protocol: 'json', skipNegotiation: false },
    msgpack: { protocol: 'messagepack', skipNegotiation: true },
  },
  {
    json: { protocol: 'json', skipNegotiation: true },
    msgpack: { protocol: 'messagepack', skipNegotiation: false },
  },
];

const label = (options) =>
  `${options.protocol} ${options.skipNegotiation ? 'skipNegotiation' : 'negotiate'}`;

const MESSAGES = ['plain text', UNICODE_TEXT, '', LARGE_TEXT];

for (const pairing of PAIRINGS) {
  describe(`mixed protocols: ${label(pairing.json)} + ${label(pairing.msgpack)}`, () => {
    async function open(options) {
      const server = await chat.get();
      return clients.connect(server.hubUrl, options);
    }

    it('each receives the other\'s Send broadcasts with identical values', TEST, async () => {
      const json = await open(pairing.json);
      const msgpack = await open(pairing.msgpack);
      // Names with non-ASCII text too: names travel through the same encoders as messages.
      const fromJson = uniqueId('json-sender-ü');
      const fromMsgpack = uniqueId('msgpack-sender-你好');

      for (const message of MESSAGES) await json.invoke('Send', fromJson, message);
      for (const message of MESSAGES) await msgpack.invoke('Send', fromMsgpack, message);

      const expectedFromJson = MESSAGES.map((message) => ({ name: fromJson, message }));
      const expectedFromMsgpack = MESSAGES.map((message) => ({ name: fromMsgpack, message }));
      for (const client of [json, msgpack]) {
        await client.waitForMessagesFrom(fromJson, MESSAGES.length);
        await client.waitForMessagesFrom(fromMsgpack, MESSAGES.length);
      }
      await Promise.all([json.barrier(), msgpack.barrier()]);
      for (const client of [json, msgpack]) {
        assert.deepEqual(client.messagesFrom(fromJson), expectedFromJson, `${client.label}, from json`);
        assert.deepEqual(
          client.messagesFrom(fromMsgpack),
          expectedFromMsgpack,
          `${client.label}, from messagepack`,
        );
      }
    });

    it('SendToGroup crosses protocols and skips non-members', TEST, async () => {
      const json = await open(pairing.json);
      const msgpack = await open(pairing.msgpack);
      const outsiderJson = await open(pairing.json);
      const outsiderMsgpack = await open(pairing.msgpack);
      const everyone = [json, msgpack, outsiderJson, outsiderMsgpack];
      const group = uniqueId('group-ß');
      const fromJson = uniqueId('json');
      const fromMsgpack = uniqueId('msgpack');

      await json.invoke('JoinGroup', group);
      await msgpack.invoke('JoinGroup', group);

      await json.invoke('SendToGroup', group, fromJson, 'from json to the group');
      await msgpack.invoke('SendToGroup', group, fromMsgpack, UNICODE_TEXT);

      for (const client of [json, msgpack]) {
        await client.waitForMessagesFrom(fromJson, 1);
        await client.waitForMessagesFrom(fromMsgpack, 1);
      }
      await Promise.all(everyone.map((client) => client.barrier()));
      for (const client of [json, msgpack]) {
        assert.deepEqual(client.messagesFrom(fromJson), [
          { name: fromJson, message: 'from json to the group' },
        ]);
        assert.deepEqual(client.messagesFrom(fromMsgpack), [
          { name: fromMsgpack, message: UNICODE_TEXT },
        ]);
      }
      for (const client of [outsiderJson, outsiderMsgpack]) {
        assert.deepEqual(client.messagesFrom(fromJson), [], `${client.label} is not in the group`);
        assert.deepEqual(client.messagesFrom(fromMsgpack), [], `${client.label} is not in the group`);
      }
    });
  });
}

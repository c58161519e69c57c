// Streaming both ways, cancellation, client results and structured values, driven by the
// official JS client against the e2e test server (e2e/server), on every transport in every
// protocol it supports (Server-Sent Events: JSON only).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  HttpTransportType,
  HubConnectionBuilder,
  LogLevel,
  Subject,
} from '@microsoft/signalr';
import { MessagePackHubProtocol } from '@microsoft/signalr-protocol-msgpack';
import { REPO_ROOT, startChat } from '../lib/server.mjs';
import { withTimeout, WAIT_MS } from '../lib/client.mjs';

const BIN = process.env.E2E_SERVER_BIN ?? path.join(REPO_ROOT, 'target', 'debug', 'e2e-server');

let server;
let startError;
before(async () => {
  try {
    server = await startChat([], { bin: BIN, hubPath: '/test' });
  } catch (error) {
    startError = error;
  }
});
const open = [];
// Hooks run in registration order: close the clients before the server goes away.
after(async () => {
  await Promise.allSettled(open.map((c) => c.stop()));
});
after(async () => {
  await server?.stop();
});

async function connectWith(protocol, configure = () => {}, transport = HttpTransportType.WebSockets) {
  if (startError) throw startError;
  const builder = new HubConnectionBuilder()
    .withUrl(server.hubUrl, { transport })
    .configureLogging(LogLevel.Warning);
  if (protocol === 'messagepack') builder.withHubProtocol(new MessagePackHubProtocol());
  const connection = builder.build();
  configure(connection);
  open.push(connection);
  await withTimeout(connection.start(), WAIT_MS, 'start');
  return connection;
}

/** Collect a stream into { items, error } once it completes or errors. */
function collect(stream) {
  const items = [];
  let subscription;
  const done = new Promise((resolve) => {
    subscription = stream.subscribe({
      next: (item) => items.push(item),
      complete: () => resolve({ items }),
      error: (error) => resolve({ items, error }),
    });
  });
  return { items, done, subscription };
}

async function eventually(check, what) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const COMBOS = [
  ['WebSockets', 'json'],
  ['WebSockets', 'messagepack'],
  ['ServerSentEvents', 'json'],
  ['LongPolling', 'json'],
  ['LongPolling', 'messagepack'],
];

for (const [transportName, protocol] of COMBOS) {
  const transport = HttpTransportType[transportName];
  const connect = (protocol, configure = () => {}) => connectWith(protocol, configure, transport);
  describe(`features over ${transportName}, ${protocol}`, () => {
    test('a server stream delivers every item, then completes', { timeout: 20_000 }, async () => {
      const connection = await connect(protocol);
      const { done } = collect(connection.stream('Counter', 5, 5));
      const { items, error } = await withTimeout(done, WAIT_MS, 'stream');
      assert.equal(error, undefined);
      assert.deepEqual(items, [0, 1, 2, 3, 4]);
    });

    test('disposing a subscription cancels the stream on the server', { timeout: 20_000 }, async () => {
      const connection = await connect(protocol);
      const before = await connection.invoke('CancelledStreams');
      const { items, subscription } = collect(connection.stream('Ticks'));
      await eventually(() => items.length >= 3, 'three ticks');
      subscription.dispose();
      await eventually(
        async () => (await connection.invoke('CancelledStreams')) === before + 1,
        'the server saw the cancellation',
      );
      const seen = items.length;
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(items.length, seen, 'no items after dispose');
    });

    test('a failing stream reports the error', { timeout: 20_000 }, async () => {
      const connection = await connect(protocol);
      const { done } = collect(connection.stream('FailingStream', 2));
      const { items, error } = await withTimeout(done, WAIT_MS, 'stream');
      assert.deepEqual(items, [0, 1]);
      assert.match(String(error), /the stream failed/);
    });

    test('an upload stream reaches the method with a normal argument', { timeout: 20_000 }, async () => {
      const connection = await connect(protocol);
      const subject = new Subject();
      const result = connection.invoke('Sum', 100, subject);
      for (let i = 1; i <= 10; i++) subject.next(i);
      subject.complete();
      assert.equal(await withTimeout(result, WAIT_MS, 'Sum'), 155);
    });

    test('streaming both ways at once', { timeout: 20_000 }, async () => {
      const connection = await connect(protocol);
      const subject = new Subject();
      const { done } = collect(connection.stream('Uppercase', subject));
      subject.next('a');
      subject.next('b');
      subject.complete();
      const { items, error } = await withTimeout(done, WAIT_MS, 'Uppercase');
      assert.equal(error, undefined);
      assert.deepEqual(items, ['A', 'B']);
    });

    test('client results: the server asks the caller and gets its answer', { timeout: 20_000 }, async () => {
      const connection = await connect(protocol, (c) => c.on('add', (a, b) => a + b));
      assert.equal(await connection.invoke('AskCaller', 'add'), 42);
    });

    test('client results: a client without the handler fails the call clearly', { timeout: 20_000 }, async () => {
      const connection = await connect(protocol);
      await assert.rejects(connection.invoke('AskCaller', 'missing'), /Client didn't provide a result/);
    });

    test('client results: one client asks another', { timeout: 20_000 }, async () => {
      const asker = await connect(protocol);
      const answerer = await connect(protocol, (c) => c.on('name', () => 'bob'));
      const id = await answerer.invoke('ConnectionId');
      assert.equal(await asker.invoke('AskClient', id), 'bob');
      await answerer.stop();
      await assert.rejects(asker.invoke('AskClient', id), /does not exist|disconnected/);
    });

    test('structured values round-trip as objects', { timeout: 20_000 }, async () => {
      const connection = await connect(protocol);
      const result = await connection.invoke('Mirror', { x: 1, y: 2, label: 'p' });
      assert.deepEqual(result, { x: 2, y: 1, label: 'P' });
    });

    test('HubError messages reach the client', { timeout: 20_000 }, async () => {
      const connection = await connect(protocol);
      await assert.rejects(connection.invoke('Fail', 'nope'), /HubException: nope/);
    });
  });
}

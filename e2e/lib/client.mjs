// Thin helpers around the official SignalR JavaScript client (@microsoft/signalr) for the
// end-to-end tests. Nothing here speaks the protocol itself: every byte on the wire comes
// from the unmodified npm client.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import {
  HttpTransportType,
  HubConnectionBuilder,
  HubConnectionState,
  LogLevel,
} from '@microsoft/signalr';
import { MessagePackHubProtocol } from '@microsoft/signalr-protocol-msgpack';

import { assertIncludes } from './values.mjs';

export { HubConnectionState, LogLevel };

/** Default bound for any single wait (start, invoke, stop, message arrival). */
export const WAIT_MS = 10_000;

/** The four ways the tests connect over WebSockets. */
export const COMBOS = [
  { protocol: 'json', skipNegotiation: false },
  { protocol: 'json', skipNegotiation: true },
  { protocol: 'messagepack', skipNegotiation: false },
  { protocol: 'messagepack', skipNegotiation: true },
].map((combo) => ({
  ...combo,
  label: `${combo.protocol} ${combo.skipNegotiation ? 'skipNegotiation' : 'negotiate'}`,
}));

/** A short random string to keep names, groups and users of one test apart from the others. */
export function uniqueId(prefix = 'id') {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** Resolves/rejects like `promise`, or rejects after `ms` with a message naming `what`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The client's transport classes by the names HttpTransportType uses. */
const TRANSPORT_CLASSES = {
  WebSocketTransport: 'WebSockets',
  ServerSentEventsTransport: 'ServerSentEvents',
  LongPollingTransport: 'LongPolling',
};

/** One connection to the chat hub plus a record of every `broadcastMessage` it received. */
export class ChatClient {
  /**
   * @param {import('@microsoft/signalr').HubConnection} connection not yet started
   * @param {string} label used in error messages
   */
  constructor(connection, label) {
    this.connection = connection;
    this.label = label;
    /** @type {{name: unknown, message: unknown}[]} every broadcastMessage, in arrival order */
    this.received = [];
    this._waiters = new Set();
    /** Set once the connection has closed: the error passed to onclose (or undefined). */
    this.closeError = undefined;
    this.isClosed = false;
    /** Resolves with the onclose error (undefined for a clean close). Never rejects. */
    this.closed = new Promise((resolve) => {
      connection.onclose((error) => {
        this.isClosed = true;
        this.closeError = error;
        resolve(error);
      });
    });

    /** Resolves with the error passed to onreconnecting (automatic reconnect only). */
    this.reconnecting = new Promise((resolve) => {
      connection.onreconnecting((error) => resolve(error));
    });

    // Registered before start() so that nothing is missed and the client never logs
    // "No client method with the name 'broadcastmessage' found."
    connection.on('broadcastMessage', (name, message) => {
      this.received.push({ name, message });
      for (const waiter of this._waiters) waiter();
    });
  }

  /** Messages received so far that satisfy `match` (a predicate on {name, message}). */
  messages(match = () => true) {
    return this.received.filter(match);
  }

  /** Messages received so far whose name is `name`. */
  messagesFrom(name) {
    return this.messages((m) => m.name === name);
  }

  /**
   * Waits until at least `count` received messages satisfy `match`; resolves with them.
   * Rejects after `timeoutMs` with a message listing what did arrive.
   */
  waitForMessages(count, { match = () => true, timeoutMs = WAIT_MS, what = '' } = {}) {
    const found = () => this.messages(match);
    if (found().length >= count) return Promise.resolve(found());
    return new Promise((resolve, reject) => {
      let timer;
      const check = () => {
        const matching = found();
        if (matching.length >= count) {
          clearTimeout(timer);
          this._waiters.delete(check);
          resolve(matching);
        }
      };
      timer = setTimeout(() => {
        this._waiters.delete(check);
        const got = found().length;
        reject(
          new Error(
            `${this.label}: timed out after ${timeoutMs} ms waiting for ${count} broadcastMessage(s)` +
              `${what ? ` (${what})` : ''}; ${got} matching arrived; all received: ` +
              JSON.stringify(this.received).slice(0, 2000),
          ),
        );
      }, timeoutMs);
      this._waiters.add(check);
    });
  }

  /** Waits for `count` messages whose name is `name`. */
  waitForMessagesFrom(name, count = 1, options = {}) {
    return this.waitForMessages(count, {
      match: (m) => m.name === name,
      what: `name ${JSON.stringify(name)}`,
      ...options,
    });
  }

  /** connection.invoke(method, ...args), bounded by WAIT_MS. */
  invoke(method, ...args) {
    return withTimeout(
      this.connection.invoke(method, ...args),
      WAIT_MS,
      `${this.label}: invoke ${method}`,
    );
  }

  /** connection.send(method, ...args) (fire and forget), bounded by WAIT_MS. */
  send(method, ...args) {
    return withTimeout(this.connection.send(method, ...args), WAIT_MS, `${this.label}: send ${method}`);
  }

  /**
   * A round trip on this connection: once the Echo reply is back, everything the server
   * queued for this connection before it handled the Echo has been delivered, because the
   * server writes each connection's outgoing messages in order.
   */
  async barrier() {
    const token = uniqueId('barrier');
    const reply = await this.invoke('Echo', token);
    if (reply !== token) {
      throw new Error(`${this.label}: Echo barrier returned ${JSON.stringify(reply)}, not ${token}`);
    }
  }

  get state() {
    return this.connection.state;
  }

  /**
   * The transport the client ended up on: 'WebSockets', 'ServerSentEvents' or 'LongPolling'.
   * Reads the client's internals (HubConnection.connection.transport), which the tests need
   * to prove a fallback happened; undefined if they ever change shape.
   */
  get transport() {
    const name = this.connection.connection?.transport?.constructor?.name;
    return TRANSPORT_CLASSES[name];
  }

  /** Stops the connection (bounded); never throws. */
  async stop() {
    if (this.connection.state === HubConnectionState.Disconnected) return;
    try {
      await withTimeout(this.connection.stop(), WAIT_MS, `${this.label}: stop`);
    } catch {
      // Best effort: a connection that will not stop must not hide the test's own result.
    }
  }
}

/** The transports of @microsoft/signalr by name; 'auto' lets the client negotiate. */
export const TRANSPORTS = ['WebSockets', 'ServerSentEvents', 'LongPolling'];

/**
 * Builds and starts a connection to the hub at `url`.
 *
 * @param {string} url hub URL, e.g. http://127.0.0.1:PORT/chat
 * @param {{protocol?: 'json'|'messagepack', skipNegotiation?: boolean, user?: string,
 *          transport?: 'WebSockets'|'ServerSentEvents'|'LongPolling'|'auto',
 *          accessToken?: string, reconnect?: boolean,
 *          logLevel?: LogLevel, label?: string}} [options]
 *   `user` sets the `user` query parameter (the server's user id for SendToUser).
 *   `transport` defaults to WebSockets; 'auto' offers the client every transport, so it takes
 *   the first one the server lists that works (falling back as the official client does).
 *   `accessToken` is returned by the client's accessTokenFactory (bearer authentication).
 *   `reconnect` turns on withAutomaticReconnect().
 *   `logLevel` defaults to Warning; tests that provoke an error close pass LogLevel.None.
 * @returns {Promise<ChatClient>}
 */
export async function connect(
  url,
  {
    protocol = 'json',
    skipNegotiation = false,
    user,
    transport = 'WebSockets',
    accessToken,
    reconnect = false,
    logLevel = LogLevel.Warning,
    label,
  } = {},
) {
  const hubUrl = new URL(url);
  if (user !== undefined) hubUrl.searchParams.set('user', user);

  const httpOptions = { skipNegotiation };
  if (transport !== 'auto') {
    if (!TRANSPORTS.includes(transport)) throw new Error(`unknown transport ${transport}`);
    httpOptions.transport = HttpTransportType[transport];
  }
  if (accessToken !== undefined) httpOptions.accessTokenFactory = () => accessToken;
  let builder = new HubConnectionBuilder()
    .withUrl(hubUrl.toString(), httpOptions)
    .configureLogging(logLevel);
  if (reconnect) builder = builder.withAutomaticReconnect();
  if (protocol === 'messagepack') {
    builder = builder.withHubProtocol(new MessagePackHubProtocol());
  } else if (protocol !== 'json') {
    throw new Error(`unknown protocol ${protocol}`);
  }

  const name =
    label ??
    `[${protocol}${transport !== 'WebSockets' ? ` ${transport}` : ''}` +
      `${skipNegotiation ? ' skipNegotiation' : ''}${user !== undefined ? ` user=${user}` : ''}]`;
  const client = new ChatClient(builder.build(), name);
  try {
    await withTimeout(client.connection.start(), WAIT_MS, `${name}: start ${hubUrl}`);
  } catch (err) {
    await client.stop();
    throw err;
  }
  return client;
}

/**
 * Invokes Echo(payload) on `client` and expects the server to close the connection with an
 * error Close message mentioning the maximum message size (so `onclose` gets an Error), and
 * the invocation to be rejected rather than answered.
 */
export async function expectOversizeClose(client, payload) {
  const outcome = client.connection.invoke('Echo', payload).then(
    (value) => ({ value }),
    (error) => ({ error }),
  );
  const first = await withTimeout(
    Promise.race([outcome, client.closed.then(() => null)]),
    WAIT_MS,
    `${client.label}: neither a reply to nor a close after Echo of ${payload.length} bytes`,
  );
  if (first && 'value' in first) {
    assert.fail(
      `${client.label}: the server answered an Echo of ${payload.length} bytes instead of closing the connection`,
    );
  }
  const error = await withTimeout(
    client.closed,
    WAIT_MS,
    `${client.label}: onclose after Echo of ${payload.length} bytes` +
      (first?.error ? ` (the invocation was rejected with: ${first.error.message})` : ''),
  );
  assert.ok(error instanceof Error, `${client.label}: onclose got ${error} instead of an Error`);
  assertIncludes(error.message, 'maximum message size');
  assert.equal(client.state, HubConnectionState.Disconnected);
  const settled = await withTimeout(outcome, WAIT_MS, `${client.label}: the oversize Echo to settle`);
  assert.ok('error' in settled, `${client.label}: the oversize Echo resolved after the close`);
}

/**
 * Tracks the clients a test opens so they are all stopped afterwards:
 *
 *   const clients = clientScope();
 *   afterEach(() => clients.stopAll());
 *   const a = await clients.connect(server.hubUrl, { protocol: 'json' });
 */
export function clientScope() {
  const open = new Set();
  return {
    async connect(url, options) {
      const client = await connect(url, options);
      open.add(client);
      return client;
    },
    async stopAll() {
      const all = [...open];
      open.clear();
      await Promise.all(all.map((client) => client.stop()));
    },
  };
}

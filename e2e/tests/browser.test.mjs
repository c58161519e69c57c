// The chat page (examples/chat/static) in headless Debian Chromium, driven through
// playwright-core: two pages, one on JSON and one on MessagePack, talk to each other; over
// WebSockets, and forced onto Server-Sent Events and long polling.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { uniqueId } from '../lib/client.mjs';
import { sharedChat } from '../lib/server.mjs';

const TEST = { timeout: 20_000 };
const UI_WAIT_MS = 8_000;
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const ARTIFACTS = fileURLToPath(new URL('../artifacts/', import.meta.url));
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const chat = sharedChat();

let launching = null;
/** The shared browser, launched on first use. */
function getBrowser() {
  if (!existsSync(CHROMIUM)) {
    return Promise.reject(
      new Error(`Chromium not found at ${CHROMIUM}: install Chromium: apt-get install -y chromium`),
    );
  }
  launching ??= chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 15_000 });
  return launching;
}

before(async () => {
  await Promise.all([chat.warmUp(), getBrowser().catch(() => {})]);
}, { timeout: 30_000 });
afterEach(() => chat.assertAlive());
after(async () => {
  const browser = await launching?.catch(() => null);
  await browser?.close();
  await chat.stop();
});

// --- page helpers ----------------------------------------------------------------------

/** Text of every line in #messages, for error messages. */
async function transcript(page) {
  try {
    const lines = await page.$$eval('#messages li', (items) =>
      items.map((li) => `${li.className}: ${li.textContent}`),
    );
    const status = await page.textContent('#status');
    return `status: ${status}\n    ${lines.join('\n    ') || '(no lines)'}`;
  } catch (err) {
    return `(page unavailable: ${err.message})`;
  }
}

/**
 * Runs `body(open)` where `open(options)` opens a chat page in its own browser context and
 * connects it. On failure, saves a screenshot of every page to e2e/artifacts/ and prints the
 * pages' transcripts and console errors; always closes the pages.
 */
async function withChatPages(t, body) {
  const sessions = [];

  async function open({ name, protocol, user, transport }) {
    const [server, browser] = await Promise.all([chat.get(), getBrowser()]);
    const context = await browser.newContext();
    const page = await context.newPage();
    const label = `${name} (${protocol}${transport ? ` over ${transport}` : ''})`;
    const session = { label, name, context, page, problems: [], requests: [] };
    // What the page asked the hub for, to tell which transport it really used.
    page.on('request', (request) => {
      const url = new URL(request.url());
      if (url.pathname === '/chat') {
        session.requests.push({ method: request.method(), type: request.resourceType(), url });
      }
    });
    sessions.push(session);
    page.on('pageerror', (err) => session.problems.push(`pageerror: ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error' || msg.type() === 'warning') {
        session.problems.push(`console.${msg.type()}: ${msg.text()}`);
      }
    });
    page.setDefaultTimeout(UI_WAIT_MS);

    const response = await page.goto(`${server.url}/`);
    assert.equal(response?.status(), 200, `GET / answered ${response?.status()}`);
    const bundles = await page.evaluate(() => ({
      signalR: typeof window.signalR === 'object',
      msgpack: Boolean(window.signalR && window.signalR.protocols && window.signalR.protocols.msgpack),
    }));
    assert.deepEqual(
      bundles,
      { signalR: true, msgpack: true },
      'the page did not load /lib/signalr.min.js and /lib/signalr-protocol-msgpack.min.js ' +
        '(the chat binary serves them from examples/chat/node_modules: run `npm ci` in examples/chat)',
    );

    await page.fill('#name', name);
    if (user !== undefined) await page.fill('#user', user);
    await page.selectOption('#protocol', protocol);
    if (transport !== undefined) await page.selectOption('#transport', transport);
    await page.click('#connect');
    try {
      await page.waitForSelector('#status[data-state="connected"]');
    } catch {
      throw new Error(`${session.label} did not connect\n  ${await transcript(page)}`);
    }
    return session;
  }

  try {
    await body(open);
  } catch (err) {
    mkdirSync(ARTIFACTS, { recursive: true });
    const slug = t.name.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').slice(0, 80);
    for (const [index, session] of sessions.entries()) {
      const file = path.join(ARTIFACTS, `${slug}-${index}-${session.name}.png`);
      try {
        await session.page.screenshot({ path: file, fullPage: true, timeout: 5_000 });
        t.diagnostic(`screenshot of ${session.label}: ${file}`);
      } catch (shotErr) {
        t.diagnostic(`no screenshot of ${session.label}: ${shotErr.message}`);
      }
      t.diagnostic(`${session.label} ${await transcript(session.page)}`);
      for (const problem of session.problems) t.diagnostic(`${session.label} ${problem}`);
    }
    throw err;
  } finally {
    await Promise.all(sessions.map((session) => session.context.close().catch(() => {})));
  }
}

/** Types `text` into #message and clicks `button`; waits until the page reports it sent. */
async function sendFrom(session, button, text) {
  const { page } = session;
  const errorsBefore = await page.locator('#messages li.error').count();
  await page.fill('#message', text);
  await page.click(button);
  // The page clears the message box once the invocation has completed, and adds an
  // li.error line if it failed.
  try {
    await page.waitForFunction(
      (before) =>
        document.getElementById('message').value === '' ||
        document.querySelectorAll('#messages li.error').length > before,
      errorsBefore,
    );
  } catch {
    throw new Error(`${session.label}: ${button} did not complete\n  ${await transcript(page)}`);
  }
  const errors = await page.$$eval('#messages li.error', (items) => items.map((li) => li.textContent));
  if (errors.length > errorsBefore) {
    throw new Error(`${session.label}: ${button} failed: ${errors.slice(errorsBefore).join(' | ')}`);
  }
}

/** Waits until `session` shows a chat line from `from` whose text is exactly `text`. */
async function expectLine(session, from, text) {
  try {
    await session.page.waitForFunction(
      ([name, message]) =>
        [...document.querySelectorAll('#messages li.chat')].some(
          (li) =>
            li.querySelector('.name')?.textContent === name &&
            li.querySelector('.text')?.textContent === message,
        ),
      [from, text],
    );
  } catch {
    throw new Error(
      `${session.label} never showed ${JSON.stringify(from)}: ${JSON.stringify(text)}\n  ` +
        (await transcript(session.page)),
    );
  }
}

/** Fills #group and clicks #join or #leave; waits for the page's confirmation line. */
async function groupAction(session, action, group) {
  const { page } = session;
  await page.fill('#group', group);
  await page.click(action === 'join' ? '#join' : '#leave');
  const confirmation = `${action === 'join' ? 'Joined' : 'Left'} group “${group}”.`;
  try {
    await page.waitForFunction(
      (expected) =>
        [...document.querySelectorAll('#messages li.system .text')].some(
          (span) => span.textContent === expected,
        ),
      confirmation,
    );
  } catch {
    throw new Error(`${session.label}: no "${confirmation}"\n  ${await transcript(page)}`);
  }
}

// --- tests -----------------------------------------------------------------------------

describe('chat page in Chromium', () => {
  it('a JSON page and a MessagePack page see each other\'s messages', TEST, async (t) => {
    await withChatPages(t, async (open) => {
      const [a, b] = await Promise.all([
        open({ name: uniqueId('ada'), protocol: 'json' }),
        open({ name: uniqueId('bob'), protocol: 'messagepack' }),
      ]);

      await sendFrom(a, '#send', 'hello from the JSON page');
      await expectLine(b, a.name, 'hello from the JSON page');
      await expectLine(a, a.name, 'hello from the JSON page');

      const reply = 'hi from MessagePack — ünïcödé 你好 🚀';
      await sendFrom(b, '#send', reply);
      await expectLine(a, b.name, reply);
      await expectLine(b, b.name, reply);

      // Markup in a message is shown as text, never parsed.
      const markup = '<img src=x onerror="window.__xss=1"><b>not bold</b>';
      await sendFrom(a, '#send', markup);
      await expectLine(b, a.name, markup);
      for (const session of [a, b]) {
        const injected = await session.page.evaluate(() => ({
          elements: document.querySelectorAll('#messages img, #messages b').length,
          xss: window.__xss ?? null,
        }));
        assert.deepEqual(injected, { elements: 0, xss: null }, `${session.label} rendered markup`);
      }
    });
  });

  it('a group joined on both pages carries messages between them', TEST, async (t) => {
    await withChatPages(t, async (open) => {
      const [a, b] = await Promise.all([
        open({ name: uniqueId('ada'), protocol: 'json' }),
        open({ name: uniqueId('bob'), protocol: 'messagepack' }),
      ]);
      const group = uniqueId('room');

      await groupAction(a, 'join', group);
      await groupAction(b, 'join', group);

      await sendFrom(a, '#send-group', 'to the group from JSON');
      await expectLine(b, a.name, 'to the group from JSON');
      await sendFrom(b, '#send-group', 'to the group from MessagePack');
      await expectLine(a, b.name, 'to the group from MessagePack');

      await groupAction(b, 'leave', group);
    });
  });

  it('a message to a user id reaches the page connected with that id', TEST, async (t) => {
    await withChatPages(t, async (open) => {
      const userId = uniqueId('user');
      const [a, b] = await Promise.all([
        open({ name: uniqueId('ada'), protocol: 'json' }),
        open({ name: uniqueId('bob'), protocol: 'messagepack', user: userId }),
      ]);

      await a.page.fill('#to-user', userId);
      await sendFrom(a, '#send-user', 'just for you');
      await expectLine(b, a.name, 'just for you');
    });
  });

  it('pages forced onto Server-Sent Events and long polling talk to each other', TEST, async (t) => {
    await withChatPages(t, async (open) => {
      const [a, b] = await Promise.all([
        open({ name: uniqueId('ada'), protocol: 'json', transport: 'ServerSentEvents' }),
        open({ name: uniqueId('bob'), protocol: 'messagepack', transport: 'LongPolling' }),
      ]);

      await sendFrom(a, '#send', 'over an event stream');
      await expectLine(b, a.name, 'over an event stream');
      await expectLine(a, a.name, 'over an event stream');
      const reply = 'over long polls — ünïcödé 🚀';
      await sendFrom(b, '#send', reply);
      await expectLine(a, b.name, reply);
      await expectLine(b, b.name, reply);

      // The transports really were the ones asked for: an EventSource and POSTs for one
      // page; polls (GET with the `_` cache buster) and POSTs for the other; no upgrade.
      const kinds = (session) =>
        new Set(
          session.requests.map(({ method, type, url }) =>
            method === 'GET' && url.searchParams.has('_') ? 'poll' : `${method} ${type}`,
          ),
        );
      const sse = kinds(a);
      assert.ok(sse.has('GET eventsource'), `${a.label}: ${[...sse]}`);
      assert.ok(!sse.has('poll') && !sse.has('GET websocket'), `${a.label}: ${[...sse]}`);
      const lp = kinds(b);
      assert.ok(lp.has('poll'), `${b.label}: ${[...lp]}`);
      assert.ok(!lp.has('GET eventsource') && !lp.has('GET websocket'), `${b.label}: ${[...lp]}`);
    });
  });
});

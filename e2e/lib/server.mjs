// Starts and stops the `chat` example binary (examples/chat) for the end-to-end tests.
//
// Contract with the binary:
//   chat --listen 127.0.0.1:0 [--max-message-size BYTES]
//   prints exactly one line `listening on http://127.0.0.1:PORT` on stdout when ready,
//   and stops on SIGTERM.

import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Absolute path of the repository root (the parent of e2e/). */
export const REPO_ROOT = path.resolve(fileURLToPath(new URL('../..', import.meta.url)));

const START_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 5_000;
const KILL_WAIT_MS = 2_000;
const MAX_CAPTURE = 64 * 1024;
const READY_LINE = /^listening on (http:\/\/127\.0\.0\.1:(\d+))\s*$/;

/** The chat binary the tests run: $CHAT_BIN if set, else <repo>/target/debug/chat. */
export function chatBinaryPath() {
  const fromEnv = process.env.CHAT_BIN;
  if (fromEnv) return path.resolve(fromEnv); // relative to the current directory, like any path
  return path.join(REPO_ROOT, 'target', 'debug', 'chat');
}

/** Appends to a capture buffer, keeping only the last MAX_CAPTURE characters. */
function capture(buffer, chunk) {
  const text = buffer + chunk;
  return text.length > MAX_CAPTURE ? text.slice(text.length - MAX_CAPTURE) : text;
}

function indent(text) {
  const trimmed = text.trimEnd();
  if (!trimmed) return '  (empty)';
  return trimmed
    .split('\n')
    .map((line) => `  | ${line}`)
    .join('\n');
}

/**
 * Spawns the chat binary on a free loopback port and waits until it is ready.
 *
 * @param {string[]} [extraArgs] more command-line flags, e.g. ['--max-message-size', '1024']
 * @param {{bin?: string, hubPath?: string}} [options] another binary speaking the same
 *   contract (e.g. the e2e test server) and the path of its hub
 * @returns {Promise<{
 *   url: string, hubUrl: string, port: number, proc: import('node:child_process').ChildProcess,
 *   stderr: () => string, exitStatus: () => null | {code: number|null, signal: string|null},
 *   assertAlive: () => void,
 *   stop: () => Promise<{code: number|null, signal: string|null}>
 * }>}
 */
export async function startChat(extraArgs = [], options = {}) {
  const bin = options.bin ?? chatBinaryPath();
  let isFile = false;
  try {
    isFile = statSync(bin).isFile();
  } catch {
    isFile = false;
  }
  if (!isFile) {
    throw new Error(
      `${path.basename(bin)} binary not found at ${bin}: run \`cargo build -p ${path.basename(bin)}\` first`,
    );
  }

  const args = ['--listen', '127.0.0.1:0', ...extraArgs];
  // The repo root as working directory, so that a binary resolving examples/chat/static
  // relative to its working directory finds it as well.
  const proc = spawn(bin, args, {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: process.env,
  });

  let stdout = '';
  let stderr = '';
  let exitStatus = null;
  const echoLogs = Boolean(process.env.E2E_SERVER_LOG);

  proc.stdout.setEncoding('utf8');
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (chunk) => {
    stderr = capture(stderr, chunk);
    if (echoLogs) process.stderr.write(`[chat:${proc.pid}] ${chunk}`);
  });

  // Never leave a server behind if the test process dies.
  const killOnExit = () => {
    if (exitStatus === null) proc.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  const exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => {
      exitStatus = { code, signal };
      process.removeListener('exit', killOnExit);
      resolve(exitStatus);
    });
  });

  const describeProc = () =>
    `command: ${bin} ${args.join(' ')}\nstdout:\n${indent(stdout)}\nstderr:\n${indent(stderr)}`;

  const ready = new Promise((resolve, reject) => {
    let pending = '';
    let done = false;
    const finish = (fn, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      fn(value);
    };

    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      finish(
        reject,
        new Error(
          `chat did not print "listening on http://127.0.0.1:PORT" within ${START_TIMEOUT_MS / 1000} s\n${describeProc()}`,
        ),
      );
    }, START_TIMEOUT_MS);

    proc.stdout.on('data', (chunk) => {
      stdout = capture(stdout, chunk);
      if (echoLogs) process.stderr.write(`[chat:${proc.pid} stdout] ${chunk}`);
      if (done) return;
      pending += chunk;
      let newline;
      while ((newline = pending.indexOf('\n')) !== -1) {
        const line = pending.slice(0, newline).replace(/\r$/, '');
        pending = pending.slice(newline + 1);
        const match = READY_LINE.exec(line);
        if (match) {
          finish(resolve, { url: match[1], port: Number(match[2]) });
          return;
        }
      }
    });

    proc.on('error', (err) => {
      finish(reject, new Error(`could not start chat: ${err.message}\n${describeProc()}`));
    });

    proc.once('exit', (code, signal) => {
      finish(
        reject,
        new Error(
          `chat exited before it was ready (code ${code}, signal ${signal})\n${describeProc()}`,
        ),
      );
    });
  });

  const { url, port } = await ready;

  async function stop() {
    if (exitStatus !== null) return exitStatus;
    proc.kill('SIGTERM');
    let timer;
    const graceful = await Promise.race([
      exited,
      new Promise((resolve) => {
        timer = setTimeout(() => resolve(null), STOP_GRACE_MS);
      }),
    ]);
    clearTimeout(timer);
    if (graceful !== null) return graceful;
    proc.kill('SIGKILL');
    const killed = await Promise.race([
      exited,
      new Promise((resolve) => {
        timer = setTimeout(() => resolve({ code: null, signal: 'unknown (still running)' }), KILL_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
    return killed;
  }

  return {
    url,
    hubUrl: `${url}${options.hubPath ?? '/chat'}`,
    port,
    proc,
    stderr: () => stderr,
    exitStatus: () => exitStatus,
    /** Throws (with the server's stderr) if the server process has exited. */
    assertAlive() {
      if (exitStatus !== null) {
        throw new Error(
          `chat server exited unexpectedly (code ${exitStatus.code}, signal ${exitStatus.signal})\n${describeProc()}`,
        );
      }
    },
    stop,
  };
}

/**
 * One chat server shared by the tests of a file, started on first use.
 *
 *   const chat = sharedChat();
 *   before(() => chat.warmUp(), { timeout: 30_000 });
 *   afterEach(() => chat.assertAlive());
 *   after(() => chat.stop());
 *   it('...', { timeout: 20_000 }, async () => { const server = await chat.get(); ... });
 *
 * warmUp() starts the server in a hook with a longer timeout than a test's, and never fails:
 * if the start fails, every test that calls get() fails with the same clear error (binary
 * missing, start timeout with stderr, ...), so each one is reported as a failure.
 */
export function sharedChat(extraArgs = []) {
  let starting = null;
  const get = () => {
    starting ??= startChat(extraArgs);
    return starting;
  };
  return {
    get,
    async warmUp() {
      await get().catch(() => {});
    },
    /** Throws if the server had started and has since exited (a crash during the test). */
    async assertAlive() {
      if (!starting) return;
      const server = await starting.catch(() => null);
      server?.assertAlive();
    },
    async stop() {
      if (!starting) return;
      const server = await starting.catch(() => null);
      await server?.stop();
    },
  };
}

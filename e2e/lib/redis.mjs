// Real redis-server processes for the end-to-end tests: one server with a password, or a
// 3-master cluster created with `redis-cli --cluster create`. Each listens on a free
// loopback port with persistence off, lives in a temporary directory, and is killed by
// stop() (and on process exit). A missing redis-server is an error saying how to install
// it, never a skip.

import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const READY_TIMEOUT_MS = 10_000;
const CLUSTER_TIMEOUT_MS = 30_000;
const INSTALL_HINT = 'install it with `apt-get install -y redis-server`';

/** A port nobody listens on right now (and, for a cluster node, port + 10000 too). */
async function freePort({ cluster = false } = {}) {
  const probe = (port) =>
    new Promise((resolve) => {
      const server = net.createServer();
      server.once('error', () => resolve(null));
      server.listen(port, '127.0.0.1', () => {
        const chosen = server.address().port;
        server.close(() => resolve(chosen));
      });
    });
  for (let attempt = 0; attempt < 100; attempt += 1) {
    const port = await probe(0);
    if (port === null) continue;
    if (!cluster) return port;
    if (port + 10_000 <= 65_535 && (await probe(port + 10_000)) !== null) return port;
  }
  throw new Error('no free loopback port found');
}

/** Sends inline commands and resolves with everything Redis answered (bounded). */
function rawCommands(port, commands, timeoutMs = 1_000) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(answer);
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(commands.map((c) => `${c}\r\n`).join('')));
    socket.on('data', (chunk) => {
      answer += chunk;
      if (answer.includes('+PONG')) {
        clearTimeout(timer);
        socket.end();
        resolve(answer);
      }
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * Starts one redis-server on a free port.
 * @param {{password?: string, cluster?: boolean}} [options]
 * @returns {Promise<{port: number, password?: string, url: string, stop: () => Promise<void>, log: () => string}>}
 */
export async function startRedis({ password, cluster = false } = {}) {
  const port = await freePort({ cluster });
  const dir = mkdtempSync(path.join(os.tmpdir(), `e2e-redis-${port}-`));
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
  if (password) args.push('--requirepass', password);
  if (cluster) {
    args.push('--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '5000');
  }
  const proc = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.setEncoding('utf8');
  proc.stderr.setEncoding('utf8');
  proc.stdout.on('data', (chunk) => {
    output = (output + chunk).slice(-16_384);
  });
  proc.stderr.on('data', (chunk) => {
    output = (output + chunk).slice(-16_384);
  });
  let exited = null;
  const exitedPromise = new Promise((resolve) => {
    proc.once('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });
  const spawnError = new Promise((_, reject) => {
    proc.once('error', (err) =>
      reject(
        err.code === 'ENOENT'
          ? new Error(`redis-server was not found in PATH: ${INSTALL_HINT}`)
          : new Error(`could not start redis-server: ${err.message}`),
      ),
    );
  });
  const killOnExit = () => proc.kill('SIGKILL');
  process.once('exit', killOnExit);

  const stop = async () => {
    process.removeListener('exit', killOnExit);
    if (exited === null) {
      proc.kill('SIGKILL');
      await exitedPromise;
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const ready = (async () => {
    const started = Date.now();
    const auth = password ? [`AUTH ${password}`] : [];
    for (;;) {
      if (exited !== null) {
        throw new Error(`redis-server on port ${port} exited (${JSON.stringify(exited)}):\n${output}`);
      }
      const answer = await rawCommands(port, [...auth, 'PING'], 500).catch(() => '');
      if (answer.includes('+PONG')) return;
      if (Date.now() - started > READY_TIMEOUT_MS) {
        throw new Error(`redis-server on port ${port} did not answer PING within ${READY_TIMEOUT_MS} ms:\n${output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  try {
    await Promise.race([ready, spawnError]);
  } catch (err) {
    await stop();
    throw err;
  }
  const auth = password ? `:${encodeURIComponent(password)}@` : '';
  return { port, password, url: `redis://${auth}127.0.0.1:${port}`, stop, log: () => output };
}

/**
 * Starts a cluster of `masters` nodes without replicas and waits for cluster_state:ok.
 * @returns {Promise<{nodes: Awaited<ReturnType<typeof startRedis>>[], url: string, stop: () => Promise<void>}>}
 */
export async function startRedisCluster(masters = 3) {
  const nodes = [];
  const stop = () => Promise.all(nodes.map((node) => node.stop())).then(() => {});
  try {
    for (let i = 0; i < masters; i += 1) nodes.push(await startRedis({ cluster: true }));
    await run(
      'redis-cli',
      ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'],
      { timeout: CLUSTER_TIMEOUT_MS },
    ).catch((err) => {
      throw new Error(`redis-cli --cluster create failed: ${err.message}\n${err.stdout ?? ''}${err.stderr ?? ''}`);
    });
    const started = Date.now();
    for (const node of nodes) {
      for (;;) {
        const { stdout } = await run('redis-cli', ['-p', String(node.port), 'cluster', 'info'], { timeout: 5_000 });
        if (stdout.includes('cluster_state:ok')) break;
        if (Date.now() - started > CLUSTER_TIMEOUT_MS) {
          throw new Error(`cluster node ${node.port} did not reach cluster_state:ok:\n${stdout}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { nodes, url: nodes[0].url, stop };
}

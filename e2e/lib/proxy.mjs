// A TCP proxy on 127.0.0.1 that forwards to a server and can cut every connection through
// it at once, abruptly (TCP reset, no WebSocket close frame): how a test kills the TCP
// connection under a live WebSocket without touching client or server.

import net from 'node:net';

/**
 * @param {number} targetPort
 * @returns {Promise<{ port: number, url: (path: string) => string, cut: () => number, connections: () => number, close: () => Promise<void> }>}
 */
export async function startProxy(targetPort) {
  const pairs = new Set();
  let accepted = 0;
  const server = net.createServer((client) => {
    accepted += 1;
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair = { client, upstream };
    pairs.add(pair);
    const forget = () => pairs.delete(pair);
    client.on('error', forget);
    upstream.on('error', forget);
    client.on('close', () => {
      forget();
      upstream.destroy();
    });
    upstream.on('close', () => {
      forget();
      client.destroy();
    });
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    port,
    url: (path) => `http://127.0.0.1:${port}${path}`,
    /** Reset every proxied connection; returns how many were cut. */
    cut() {
      const count = pairs.size;
      for (const { client, upstream } of pairs) {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      }
      pairs.clear();
      return count;
    },
    /** Connections accepted so far. */
    connections: () => accepted,
    close: () =>
      new Promise((resolve) => {
        for (const { client, upstream } of pairs) {
          client.destroy();
          upstream.destroy();
        }
        server.close(() => resolve());
      }),
  };
}

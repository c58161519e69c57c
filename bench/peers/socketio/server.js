// The Socket.IO peer, written the way its docs suggest (peers-measured.md §1.1).
//
//   PORT=3000 [REDIS=redis://127.0.0.1:6390] node server.js
//
// Events: `bcast` → io.emit("m", data) (W2), `join` → the caller joins a room, with an ack,
// `relay` → io.to("r").emit("m", data) (W3). Defaults everywhere: pingInterval 25 s,
// pingTimeout 20 s, no per-message deflate; Node sets TCP no-delay by default.
"use strict";
const http = require("node:http");
const { Server } = require("socket.io");

async function main() {
  const port = Number(process.env.PORT || 3000);
  const redisUrl = process.env.REDIS || "";
  const httpServer = http.createServer();
  const io = new Server(httpServer, {});
  if (redisUrl) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pub = createClient({ url: redisUrl });
    const sub = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub));
  }
  io.on("connection", (socket) => {
    socket.on("bcast", (data) => io.emit("m", data));
    socket.on("join", (room, ack) => {
      socket.join(room);
      if (ack) ack("ok");
    });
    socket.on("relay", (data) => io.to("r").emit("m", data));
  });
  httpServer.listen(port, "127.0.0.1", () => {
    console.log(`socket.io listening on 127.0.0.1:${port}`);
  });
  const stop = () => {
    io.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

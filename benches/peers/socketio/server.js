// The socket.io 4 peer of the ws_load bench (benches/ws_load/): rooms and direct messages,
// written the way people use socket.io today, untuned.
//
//   node server.js --port N      (0: any free port)
//
// Prints `listening <port>` on stdout once it accepts connections.
//
// Protocol (events):
//   join  "room", ack          -> the socket joins the room, then ack(true)
//   send  {room, body}         -> io.to(room).emit("message", {room, body})  (sender included)
//   dm    {to, body}           -> io.to("user:" + to).emit("message", {room: "dm", body})
// Each socket joins `user:<name>`, the name being `auth.user` of the CONNECT packet or the
// `user` query parameter. Connection state recovery is on: a client that comes back within
// two minutes with `{pid, offset}` in its CONNECT packet gets its rooms back and the
// broadcasts it missed.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

function parsePort(argv) {
  const i = argv.indexOf("--port");
  if (i === -1) return 0;
  const port = Number(argv[i + 1]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`bad --port: ${argv[i + 1]}`);
    process.exit(2);
  }
  return port;
}

const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  maxHttpBufferSize: 64 * 1024,
  pingInterval: 25000,
  connectionStateRecovery: {
    maxDisconnectionDuration: 2 * 60 * 1000,
    skipMiddlewares: true,
  },
});

io.on("connection", (socket) => {
  const auth = socket.handshake.auth || {};
  const user = String(auth.user || socket.handshake.query.user || socket.id);
  // On recovery socket.io has already put the socket back in its rooms; joining again is
  // harmless.
  socket.join(`user:${user}`);

  socket.on("join", (room, ack) => {
    if (typeof room === "string") socket.join(room);
    if (typeof ack === "function") ack(typeof room === "string");
  });

  socket.on("send", (msg) => {
    if (!msg || typeof msg.room !== "string") return;
    io.to(msg.room).emit("message", { room: msg.room, body: msg.body });
  });

  socket.on("dm", (msg) => {
    if (!msg || typeof msg.to !== "string") return;
    io.to(`user:${msg.to}`).emit("message", { room: "dm", body: msg.body });
  });
});

httpServer.listen(parsePort(process.argv), "127.0.0.1", () => {
  process.stdout.write(`listening ${httpServer.address().port}\n`);
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => process.exit(0));
}

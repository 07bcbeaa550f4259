// The Node.js socket.io peer of `python -m bench peers`: rooms and an acked broadcast.
// "join" puts the socket in a room; "msg" is broadcast to the socket's room, sender
// included, and acknowledged to the sender. Usage: node server.js PORT
"use strict";
const { createServer } = require("node:http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 3000);
const httpServer = createServer();
const io = new Server(httpServer, {
  transports: ["websocket"], // the load generator speaks engine.io over a bare websocket
  perMessageDeflate: false, // as the WedSync gateway and the python-socketio peer
  maxHttpBufferSize: 1e6,
});

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    socket.data.room = room;
    if (typeof ack === "function") ack("ok");
  });
  socket.on("msg", (data, ack) => {
    io.to(socket.data.room).emit("msg", data);
    if (typeof ack === "function") ack();
  });
});
httpServer.listen(port, "127.0.0.1", () => console.log(`listening on 127.0.0.1:${port}`));

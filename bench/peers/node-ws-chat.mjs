// The Node peer: ChatRoom's frames on the `ws` package, each broadcast serialized once.
// `node node-ws-chat.mjs PORT`
import { WebSocketServer } from "ws";

const port = Number(process.argv[2] ?? 8792);
const rooms = new Map();
const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });

function broadcast(room, frame, except) {
  const members = rooms.get(room);
  if (!members) return;
  const bytes = Buffer.from(JSON.stringify(frame));
  for (const ws of members) {
    if (ws !== except) ws.send(bytes, { binary: false });
  }
}

wss.on("connection", (ws, req) => {
  const url = new URL(req.url, "http://localhost");
  const room = url.pathname.split("/").filter(Boolean).pop() ?? "lobby";
  const user = url.searchParams.get("username") ?? "Anonymous";
  broadcast(room, { type: "join", user, timestamp: Date.now() }, ws);
  if (!rooms.has(room)) rooms.set(room, new Set());
  rooms.get(room).add(ws);
  ws.on("message", (data, isBinary) => {
    if (isBinary) return;
    broadcast(room, { type: "message", user, text: data.toString(), timestamp: Date.now() });
  });
  ws.on("close", () => {
    const members = rooms.get(room);
    members.delete(ws);
    if (members.size === 0) rooms.delete(room);
    broadcast(room, { type: "leave", user, timestamp: Date.now() });
  });
});
wss.on("listening", () => console.log(`node ws peer listening on 127.0.0.1:${port}`));

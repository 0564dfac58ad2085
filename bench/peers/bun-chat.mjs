// The Bun peer: ChatRoom's frames on Bun.serve with its native publish/subscribe (uWebSockets).
// `bun bun-chat.mjs PORT`
const port = Number(process.argv[2] ?? 8791);

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch(req, server) {
    const url = new URL(req.url);
    const room = url.pathname.split("/").filter(Boolean).pop() ?? "lobby";
    const user = url.searchParams.get("username") ?? "Anonymous";
    if (server.upgrade(req, { data: { room, user } })) return;
    return new Response("Upgrade required", { status: 426 });
  },
  websocket: {
    perMessageDeflate: false,
    open(ws) {
      // ws.publish leaves out the sender: everyone but the joiner.
      ws.publish(ws.data.room, JSON.stringify({ type: "join", user: ws.data.user, timestamp: Date.now() }));
      ws.subscribe(ws.data.room);
    },
    message(ws, message) {
      if (typeof message !== "string") return;
      const frame = { type: "message", user: ws.data.user, text: message, timestamp: Date.now() };
      server.publish(ws.data.room, JSON.stringify(frame));
    },
    close(ws) {
      server.publish(ws.data.room, JSON.stringify({ type: "leave", user: ws.data.user, timestamp: Date.now() }));
    },
  },
});
console.log(`bun peer listening on 127.0.0.1:${server.port}`);

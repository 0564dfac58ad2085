// The official Cloudflare Agents clients (`agents` 0.32.0, `partysocket` 1.3.0), unchanged,
// against the agents-rs examples server at AGENTS_HOST. Run by tests/tests/interop.rs.
import assert from "node:assert/strict";
import { test } from "node:test";

import { AgentClient } from "agents/client";
import { useAgent } from "agents/react";
import PartySocket from "partysocket";
import { createElement } from "react";
import TestRenderer from "react-test-renderer";
import WebSocket from "ws";

// AGENTS_HOSTS (a comma-separated list: the nodes of a cluster) spreads the clients over
// several servers in turn, so clients of one agent meet through different nodes.
const hosts = (process.env.AGENTS_HOSTS ?? process.env.AGENTS_HOST ?? "").split(",").filter(Boolean);
assert.ok(hosts.length > 0, "AGENTS_HOST must name the server, like 127.0.0.1:8787");
let turn = 0;
/** The next server in turn. */
const nextHost = () => hosts[turn++ % hosts.length];
// An MCP server (tests/js/mcp-server.mjs) for the Toolbox agent.
const mcpUrl = process.env.MCP_SERVER_URL;
assert.ok(mcpUrl, "MCP_SERVER_URL must name an MCP server, like http://127.0.0.1:3000/mcp");

/** A fresh instance name per test, so tests do not share state. */
const room = (prefix) => `${prefix}-${Math.random().toString(36).slice(2, 10)}`;

/** An AgentClient as a front end makes one; Node 20 has no global WebSocket, so `ws` is passed. */
const client = (options) => new AgentClient({ host: nextHost(), WebSocket, ...options });

/** Waits until `check()` is true, failing after `ms`. */
async function until(check, what, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test("ready resolves with the identity and the initial state", async () => {
  const name = room("ready");
  let identity;
  const c = client({ agent: "Counter", name, onIdentity: (n, a) => (identity = [n, a]) });
  try {
    await c.ready;
    assert.deepEqual(identity, [name, "counter"]);
    assert.equal(c.identified, true);
    assert.deepEqual(c.state, { count: 0 }, "stateFollows: the state is applied before ready");
  } finally {
    c.close();
  }
});

test("call and stub reach the callables; errors reject", async () => {
  const c = client({ agent: "Counter", name: room("rpc") });
  try {
    await c.ready;
    assert.equal(await c.call("increment"), 1);
    assert.equal(await c.call("increment", []), 2);
    assert.equal(await c.stub.add(2, 3), 5);
    assert.equal(await c.stub.add(0.5, 1), 1.5);
    await assert.rejects(c.call("fail"), { message: "Invalid data format" });
    await assert.rejects(c.call("nope"), { message: "Method nope does not exist" });
    await assert.rejects(c.stub.notCallable(), { message: "Method notCallable is not callable" });
    await assert.rejects(c.call("add", ["x", 1]), /Invalid argument 0 \(`a`\) for method add/);
  } finally {
    c.close();
  }
});

test("streaming calls deliver chunks, then the final value", async () => {
  const c = client({ agent: "Counter", name: room("stream") });
  try {
    await c.ready;
    const chunks = [];
    let done;
    const result = await c.call("streamNumbers", [5], {
      stream: { onChunk: (chunk) => chunks.push(chunk), onDone: (last) => (done = last) },
    });
    assert.deepEqual(chunks, [0, 1, 2, 3, 4]);
    assert.equal(done, 5);
    assert.equal(result, 5);
  } finally {
    c.close();
  }
});

test("setState and onStateUpdate sync two clients", async () => {
  const name = room("sync");
  const seenByA = [];
  const seenByB = [];
  const a = client({ agent: "Counter", name, onStateUpdate: (s, source) => seenByA.push([s, source]) });
  const b = client({ agent: "Counter", name, onStateUpdate: (s, source) => seenByB.push([s, source]) });
  try {
    await Promise.all([a.ready, b.ready]);
    a.setState({ count: 41 });
    // Optimistic on the sender, a server broadcast on the other.
    assert.deepEqual(seenByA.at(-1), [{ count: 41 }, "client"]);
    await until(() => b.state?.count === 41, "b to see 41");
    assert.deepEqual(seenByB.at(-1), [{ count: 41 }, "server"]);
    assert.equal(await b.call("increment"), 42);
    await until(() => a.state?.count === 42, "a to see 42");
    // The sender's own update is not echoed back to it.
    assert.deepEqual(seenByA.slice(-2), [[{ count: 41 }, "client"], [{ count: 42 }, "server"]]);
  } finally {
    a.close();
    b.close();
  }
});

test("a readonly connection cannot change the state", async () => {
  const name = room("readonly");
  const errors = [];
  const reader = client({
    agent: "Counter",
    name,
    query: { readonly: "true" },
    onStateUpdateError: (error) => errors.push(error),
  });
  const writer = client({ agent: "Counter", name });
  try {
    await Promise.all([reader.ready, writer.ready]);
    reader.setState({ count: 9 });
    await until(() => errors.length === 1, "the state error");
    assert.deepEqual(errors, ["Connection is readonly"]);
    await assert.rejects(reader.call("increment"), { message: "Connection is readonly" });
    assert.equal(await reader.stub.add(1, 1), 2, "non-mutating calls still work");
    // It still receives broadcasts.
    assert.equal(await writer.call("increment"), 1);
    await until(() => reader.state?.count === 1, "the reader to see 1");
  } finally {
    reader.close();
    writer.close();
  }
});

test("a partysocket reconnect keeps the same _pk connection id", async () => {
  const ids = [];
  const socket = new PartySocket({
    host: nextHost(),
    prefix: "agents",
    party: "tags-agent",
    room: room("pk"),
    WebSocket,
    minReconnectionDelay: 10,
    maxReconnectionDelay: 50,
  });
  socket.addEventListener("message", (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type === "tags") ids.push(frame.id);
  });
  try {
    await until(() => ids.length === 1, "the first tags frame");
    socket.reconnect();
    await until(() => ids.length === 2, "the tags frame after reconnecting");
    assert.equal(ids[0], socket.id);
    assert.equal(ids[1], socket.id);
  } finally {
    socket.close();
  }
});

test("AgentClient sees the MCP servers frame as the Toolbox adds, uses and removes a server", async () => {
  const frames = [];
  const c = client({ agent: "Toolbox", name: room("mcp") });
  c.addEventListener("message", (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type === "cf_agent_mcp_servers") frames.push(frame.mcp);
  });
  try {
    await c.ready;
    await until(() => frames.length > 0, "the MCP frame of the connect");
    assert.deepEqual(frames[0], { prompts: [], resources: [], servers: {}, tools: [] });
    const added = await c.call("addServer", ["tools", mcpUrl]);
    assert.equal(added.state, "connecting");
    const ready = () => frames.find((mcp) => mcp.servers[added.id]?.state === "ready");
    await until(ready, "the server ready", 30_000);
    const mcp = ready();
    assert.equal(mcp.servers[added.id].name, "tools");
    assert.equal(mcp.servers[added.id].server_url, mcpUrl);
    assert.deepEqual(mcp.tools.map((tool) => tool.name), ["add", "echo", "fail", "grow"]);
    assert.ok(mcp.tools.every((tool) => tool.serverId === added.id));
    assert.deepEqual(await c.stub.listTools(), [
      { serverId: added.id, name: "add", description: "Adds two numbers" },
      { serverId: added.id, name: "echo", description: "Echoes a text" },
      { serverId: added.id, name: "fail", description: "Always fails" },
      { serverId: added.id, name: "grow", description: "Adds a tool" },
    ]);
    assert.deepEqual(await c.call("callTool", [added.id, "add", { a: 1, b: 2 }]), {
      content: [{ type: "text", text: "3" }],
    });
    await assert.rejects(c.call("callTool", ["nope", "add", {}]), { message: "MCP server nope not found" });
    await c.call("removeServer", [added.id]);
    await until(() => frames.at(-1).servers[added.id] === undefined, "the server removed");
  } finally {
    c.close();
  }
});

test("useAgent's onMcpUpdate receives the MCP servers state", async () => {
  // React renders `useAgent` as a front end would (react-test-renderer: no DOM needed).
  const updates = [];
  const name = room("react");
  const useHost = nextHost();
  let agent;
  function Toolbox() {
    agent = useAgent({ agent: "Toolbox", name, host: useHost, WebSocket, onMcpUpdate: (mcp) => updates.push(mcp) });
    return null;
  }
  const renderer = TestRenderer.create(createElement(Toolbox));
  try {
    await until(() => updates.length > 0, "onMcpUpdate on connect");
    assert.deepEqual(updates[0], { prompts: [], resources: [], servers: {}, tools: [] });
    const added = await agent.call("addServer", ["react", mcpUrl]);
    const ready = () => updates.find((mcp) => mcp.servers[added.id]?.state === "ready");
    await until(ready, "onMcpUpdate with the server ready", 30_000);
    assert.deepEqual(ready().tools.map((tool) => tool.name), ["add", "echo", "fail", "grow"]);
    assert.equal(ready().servers[added.id].instructions, "Tools for the agents-rs tests.");
  } finally {
    renderer.unmount();
  }
});

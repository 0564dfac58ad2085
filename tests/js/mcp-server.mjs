// A real MCP server for the tests of `ctx.mcp()`: the official TypeScript SDK
// (@modelcontextprotocol/sdk, from package-lock.json) on Node's http module, listening on
// 127.0.0.1 at the port given as the first argument (0: any), which it prints as
// `MCP_SERVER_LISTENING <port>` once it listens.
//
//   /mcp            streamable HTTP (sessions)
//   /private/mcp    streamable HTTP that answers 401 without `Authorization: Bearer test-token`
//   /sse            the older HTTP+SSE transport (GET opens the stream; POST /messages)
//   /modern/mcp     the stateless protocol (2026-07-28) only, from the v2 SDK
//                   (@modelcontextprotocol/server): `server/discover`, no `initialize`
//
// Its tools: `add` (two numbers), `echo` (a text), `fail` (a tool error), `grow` (adds a tool,
// and tells the client its tool list changed). A prompt `greet` and a resource `info://server`.
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";

import { McpServer as ModernServer, createMcpHandler } from "@modelcontextprotocol/server";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { SSEServerTransport } from "@modelcontextprotocol/sdk/server/sse.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";

const port = Number(process.argv[2] ?? 0);

/** One MCP server per session, as the SDK's examples do. */
function mcpServer() {
  const server = new McpServer(
    { name: "test-tools", version: "1.0.0" },
    { instructions: "Tools for the agents-rs tests." },
  );
  server.registerTool(
    "add",
    { description: "Adds two numbers", inputSchema: { a: z.number(), b: z.number() } },
    async ({ a, b }) => ({ content: [{ type: "text", text: String(a + b) }] }),
  );
  server.registerTool(
    "echo",
    { description: "Echoes a text", inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: "text", text }] }),
  );
  server.registerTool("fail", { description: "Always fails" }, async () => {
    throw new Error("the tool failed on purpose");
  });
  let grown = 0;
  server.registerTool("grow", { description: "Adds a tool" }, async () => {
    grown += 1;
    const name = `grown-${grown}`;
    server.registerTool(name, { description: "A tool added later" }, async () => ({
      content: [{ type: "text", text: name }],
    }));
    return { content: [{ type: "text", text: name }] };
  });
  server.registerPrompt(
    "greet",
    { description: "Greets someone", argsSchema: { name: z.string() } },
    ({ name }) => ({
      messages: [{ role: "user", content: { type: "text", text: `Hello, ${name}!` } }],
    }),
  );
  server.registerResource(
    "info",
    "info://server",
    { description: "About this server", mimeType: "text/plain" },
    async (uri) => ({ contents: [{ uri: uri.href, text: "test-tools 1.0.0" }] }),
  );
  return server;
}

/** The v2 SDK's server, stateless, refusing the 2025 protocol. */
const modern = createMcpHandler(
  () => {
    const server = new ModernServer(
      { name: "modern-tools", version: "2.0.0" },
      { instructions: "Stateless tools for the agents-rs tests." },
    );
    server.registerTool(
      "add",
      { description: "Adds two numbers", inputSchema: z.object({ a: z.number(), b: z.number() }) },
      async ({ a, b }) => ({ content: [{ type: "text", text: String(a + b) }] }),
    );
    return server;
  },
  { legacy: "reject" },
);

/** Serves a Node request with a handler of web-standard `Request` and `Response`. */
async function serveFetch(handler, req, res) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const body = ["GET", "HEAD"].includes(req.method) ? undefined : Buffer.concat(chunks);
  const request = new Request(`http://${req.headers.host}${req.url}`, {
    method: req.method,
    headers: req.headers,
    body,
  });
  const response = await handler.fetch(request);
  res.writeHead(response.status, Object.fromEntries(response.headers));
  if (response.body) for await (const chunk of response.body) res.write(chunk);
  res.end();
}

const streamable = new Map();
const sse = new Map();

async function body(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString("utf8");
  return text ? JSON.parse(text) : undefined;
}

async function handleStreamable(req, res) {
  const id = req.headers["mcp-session-id"];
  const parsed = req.method === "POST" ? await body(req) : undefined;
  let transport = id ? streamable.get(id) : undefined;
  if (!transport) {
    if (req.method !== "POST" || id || !isInitializeRequest(parsed)) {
      res.writeHead(id ? 404 : 400, { "content-type": "application/json" });
      res.end(JSON.stringify({ jsonrpc: "2.0", error: { code: -32000, message: "No valid session" }, id: null }));
      return;
    }
    transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (session) => streamable.set(session, transport),
    });
    transport.onclose = () => streamable.delete(transport.sessionId);
    await mcpServer().connect(transport);
  }
  await transport.handleRequest(req, res, parsed);
}

async function handle(req, res) {
  const url = new URL(req.url, "http://localhost");
  if (url.pathname === "/mcp") return handleStreamable(req, res);
  if (url.pathname === "/modern/mcp") return serveFetch(modern, req, res);
  if (url.pathname === "/private/mcp") {
    if (req.headers.authorization !== "Bearer test-token") {
      res.writeHead(401, { "www-authenticate": 'Bearer realm="test"' });
      return res.end("Unauthorized");
    }
    return handleStreamable(req, res);
  }
  if (url.pathname === "/sse" && req.method === "GET") {
    const transport = new SSEServerTransport("/messages", res);
    sse.set(transport.sessionId, transport);
    res.on("close", () => sse.delete(transport.sessionId));
    return mcpServer().connect(transport);
  }
  if (url.pathname === "/messages" && req.method === "POST") {
    const transport = sse.get(url.searchParams.get("sessionId"));
    if (!transport) {
      res.writeHead(404);
      return res.end("No such session");
    }
    return transport.handlePostMessage(req, res, await body(req));
  }
  res.writeHead(url.pathname === "/sse" ? 405 : 404);
  res.end(url.pathname === "/sse" ? "Method Not Allowed" : "Not Found");
}

const server = createServer((req, res) => {
  handle(req, res).catch((error) => {
    console.error(error);
    if (!res.headersSent) res.writeHead(500);
    res.end(String(error));
  });
});
server.listen(port, "127.0.0.1", () => {
  console.log(`MCP_SERVER_LISTENING ${server.address().port}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));

// The demo page in a real browser: headless Chromium (Debian's package), driven by
// playwright-core, against the examples server binary started here as a child process.
// Run by tests/tests/browser.rs, which passes:
//   EXAMPLES_SERVER  the examples server binary
//   CHROMIUM         the Chromium executable
//   ARTIFACTS        a directory for the screenshots
//   NGINX_PATH       nginx, for the test behind a TLS proxy (empty: that test is skipped)
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

const { EXAMPLES_SERVER, CHROMIUM, ARTIFACTS, NGINX_PATH, CLUSTER_URL } = process.env;
assert.ok(EXAMPLES_SERVER && CHROMIUM && ARTIFACTS, "EXAMPLES_SERVER, CHROMIUM and ARTIFACTS");

/** Generous bound on any one wait: a broken page fails instead of hanging. */
const WAIT = 15_000;

const dataDir = mkdtempSync(join(tmpdir(), "agents-rs-browser-"));
let server;
let browser;

/**
 * Starts the examples server on `addr` (port 0 picks one) with the test's data directory and
 * resolves with the address it printed.
 */
function startServer(addr, more = []) {
  const child = spawn(EXAMPLES_SERVER, ["--addr", addr, "--data-dir", dataDir, ...more], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, RUST_LOG: "info" }, // the address is on an info line
  });
  const listening = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the server did not start")), WAIT);
    child.once("exit", (code) => reject(new Error(`the server exited with ${code}`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const found = line.match(/examples on http:\/\/(\S+)/);
      if (found) {
        clearTimeout(timer);
        resolve(found[1]);
      }
    });
  });
  return { child, listening };
}

/** SIGTERM, as systemd stops it; resolves with the exit code. */
function stopServer(child) {
  return new Promise((resolve) => {
    child.once("exit", (code) => resolve(code));
    child.kill("SIGTERM");
  });
}

before(async () => {
  server = startServer("127.0.0.1:0");
  server.addr = await server.listening;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // As root in a container, and with no network beyond loopback: no sandbox, no GPU, and
    // none of Chromium's background requests.
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  if (server?.child.exitCode === null) await stopServer(server.child);
  rmSync(dataDir, { recursive: true, force: true });
});

/** Opens the demo as `name` in room `room` (on `addr`), failing on any page error. */
async function open(room, name, addr = server.addr) {
  const page = await browser.newPage({ viewport: { width: 1100, height: 720 } });
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on("pageerror", (error) => errors.push(error));
  page.on("console", (message) => {
    // Chromium logs each failed reconnection attempt while the server restarts.
    const reconnecting = /WebSocket connection to .* failed/.test(message.text());
    if (message.type() === "error" && !reconnecting) errors.push(new Error(message.text()));
  });
  page.errors = errors;
  await page.goto(`http://${addr}/?room=${room}&name=${name}`);
  return page;
}

const byId = (page, id) => page.getByTestId(id);

async function expectStatus(page, state) {
  for (const id of ["status-chat", "status-presence", "status-counter"]) {
    await byId(page, id).and(page.locator(`[data-state="${state}"]`)).waitFor();
  }
}

async function expectText(page, id, text) {
  await page.waitForFunction(
    ([id, text]) => document.querySelector(`[data-testid="${id}"]`)?.textContent === text,
    [id, text],
  );
}

/** The presence list is ordered by connection id, which is random: compared as a set. */
async function expectPeople(page, people) {
  await page.waitForFunction(
    (people) =>
      JSON.stringify(
        [...document.querySelectorAll('[data-testid="presence-list"] li')]
          .map((li) => li.textContent)
          .sort(),
      ) === JSON.stringify(people),
    [...people].sort(),
  );
}

async function expectChat(page, line) {
  await byId(page, "chat-log").locator("li", { hasText: line }).first().waitFor();
}

async function say(page, text) {
  await byId(page, "chat-input").fill(text);
  await byId(page, "chat-send").click();
}

test("two pages chat, see presence and share the counter; the page reconnects", async () => {
  const room = `room-${Math.random().toString(36).slice(2, 8)}`;
  const alice = await open(room, "alice");
  await expectStatus(alice, "connected");
  await expectText(alice, "count", "0");
  await expectPeople(alice, ["alice (you)"]);

  const bob = await open(room, "bob");
  await expectStatus(bob, "connected");
  await expectPeople(alice, ["alice (you)", "bob"]);
  await expectPeople(bob, ["alice", "bob (you)"]);
  await expectChat(alice, "bob joined");

  // Chat both ways; ChatRoom broadcasts to the sender too.
  await say(alice, "hello from alice");
  await expectChat(bob, "alice: hello from alice");
  await expectChat(alice, "alice: hello from alice");
  await say(bob, "hi alice");
  await expectChat(alice, "bob: hi alice");

  // The counter: increments from one page show on the other through state sync.
  await byId(alice, "increment").click();
  await expectText(alice, "count", "1");
  await byId(alice, "increment").click();
  await expectText(bob, "count", "2");
  await byId(bob, "increment").click();
  await expectText(alice, "count", "3");

  mkdirSync(ARTIFACTS, { recursive: true });
  await alice.screenshot({ path: join(ARTIFACTS, "demo.png") });

  // Presence changes when a page closes, and the room hears that bob left.
  await bob.close();
  await expectPeople(alice, ["alice (you)"]);
  await expectChat(alice, "bob left");

  // Restart the server: the page shows it is reconnecting, then reconnects by itself, and
  // the counter's state survived on disk.
  assert.equal(await stopServer(server.child), 0, "SIGTERM exits cleanly");
  await expectStatus(alice, "reconnecting");
  // Blank what the page shows, so what it shows next comes from the new server.
  await alice.evaluate(() => {
    document.querySelector('[data-testid="count"]').textContent = "?";
    document.querySelector('[data-testid="presence-list"]').replaceChildren();
  });
  const addr = server.addr;
  server = startServer(addr);
  server.addr = await server.listening;
  assert.equal(server.addr, addr, "the same address again");
  await expectStatus(alice, "connected");
  await expectText(alice, "count", "3");
  await expectPeople(alice, ["alice (you)"]);
  await byId(alice, "increment").click();
  await expectText(alice, "count", "4");
  await alice.screenshot({ path: join(ARTIFACTS, "demo-reconnected.png") });

  assert.deepEqual(alice.errors, [], "no page errors");
  await alice.close();
});

test("through a cluster: pages on two nodes chat, see presence and share the counter", {
  skip: !CLUSTER_URL && "CLUSTER_URL is not set (the Rust test sets it when PostgreSQL is installed)",
}, async () => {
  const nodes = [];
  try {
    for (const id of ["n0", "n1"]) {
      const node = startServer("127.0.0.1:0", ["--cluster-url", CLUSTER_URL, "--node-id", id]);
      node.addr = await node.listening;
      nodes.push(node);
    }
    const room = `room-${Math.random().toString(36).slice(2, 8)}`;
    const alice = await open(room, "alice", nodes[0].addr);
    await expectStatus(alice, "connected");
    const bob = await open(room, "bob", nodes[1].addr);
    await expectStatus(bob, "connected");
    await expectPeople(alice, ["alice (you)", "bob"]);
    await expectPeople(bob, ["alice", "bob (you)"]);
    await say(alice, "hello from node 0");
    await expectChat(bob, "alice: hello from node 0");
    await say(bob, "hello from node 1");
    await expectChat(alice, "bob: hello from node 1");
    await byId(alice, "increment").click();
    await expectText(bob, "count", "1");
    await byId(bob, "increment").click();
    await expectText(alice, "count", "2");
    mkdirSync(ARTIFACTS, { recursive: true });
    await bob.screenshot({ path: join(ARTIFACTS, "demo-cluster.png") });
    await bob.close();
    await expectPeople(alice, ["alice (you)"]);
    await expectChat(alice, "bob left");
    assert.deepEqual(alice.errors, [], "no page errors");
    await alice.close();
  } finally {
    for (const node of nodes) {
      if (node.child.exitCode === null) await stopServer(node.child);
    }
  }
});

/** A port nothing listens on right now. */
async function freePort() {
  const probe = createServer().listen(0, "127.0.0.1");
  await new Promise((resolve) => probe.once("listening", resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/**
 * The book's nginx configuration (examples/deploy/nginx.conf), made to run here: its listen
 * address, upstream and certificate paths replaced, everything else as documented.
 */
function nginxConfig(dir, port, upstream) {
  let site = readFileSync(new URL("../../examples/deploy/nginx.conf", import.meta.url), "utf8");
  for (const [from, to] of [
    ["listen 443 ssl;", `listen 127.0.0.1:${port} ssl;`],
    ["server 127.0.0.1:8787;", `server ${upstream};`],
    ["/etc/letsencrypt/live/agents.example.com/fullchain.pem", join(dir, "cert.pem")],
    ["/etc/letsencrypt/live/agents.example.com/privkey.pem", join(dir, "key.pem")],
  ]) {
    assert.ok(site.includes(from), `nginx.conf still has \`${from}\``);
    site = site.replace(from, to);
  }
  const temp = (name) => `${name}_temp_path ${join(dir, name)};`;
  return `daemon off;
pid ${join(dir, "nginx.pid")};
error_log stderr warn;
events {}
http {
  access_log off;
  ${["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map(temp).join("\n  ")}
${site}
}
`;
}

test("behind nginx with TLS, as the production chapter configures it", {
  skip: NGINX_PATH ? false : "no nginx",
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), "agents-rs-nginx-"));
  chmodSync(dir, 0o755); // nginx's workers (not root) keep their buffers under it
  const port = await freePort();
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
    "-addext", "subjectAltName=IP:127.0.0.1",
    "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"),
  ], { stdio: "ignore" });
  writeFileSync(join(dir, "nginx.conf"), nginxConfig(dir, port, server.addr));
  const nginx = spawn(NGINX_PATH, ["-p", dir, "-c", join(dir, "nginx.conf"), "-e", "stderr"], {
    stdio: ["ignore", "inherit", "inherit"],
  });
  const context = await browser.newContext({
    ignoreHTTPSErrors: true, // the certificate is self-signed
    viewport: { width: 1100, height: 720 },
  });
  try {
    const room = `tls-${Math.random().toString(36).slice(2, 8)}`;
    // nginx takes a moment to listen: retry the first load.
    const secure = await context.newPage();
    secure.setDefaultTimeout(WAIT);
    const url = `https://127.0.0.1:${port}/?room=${room}&name=carol`;
    for (let attempt = 0; ; attempt++) {
      try {
        await secure.goto(url);
        break;
      } catch (error) {
        if (attempt >= 50) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    await expectStatus(secure, "connected"); // wss:// through the proxy
    const direct = await open(room, "dave"); // plain ws:// to the server itself
    await expectStatus(direct, "connected");
    await expectPeople(secure, ["carol (you)", "dave"]);
    await say(secure, "over tls");
    await expectChat(direct, "carol: over tls");
    await byId(secure, "increment").click();
    await expectText(direct, "count", "1");
    await secure.screenshot({ path: join(ARTIFACTS, "demo-behind-nginx.png") });
    await direct.close();
  } finally {
    await context.close();
    nginx.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  }
});

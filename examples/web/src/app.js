// The demo page: a chat room (ChatRoom), who is here (PresenceAgent) and a shared counter
// (Counter), each one AgentClient of the official `agents` package, as a Cloudflare front end
// would write it. esbuild bundles this file with the client into dist/app.js (build.mjs).
import { AgentClient } from "agents/client";

const params = new URLSearchParams(location.search);
// The room is a path segment: keep it to characters that need no escaping.
const room = (params.get("room") || "lobby").replace(/[^A-Za-z0-9_-]/g, "").slice(0, 64) || "lobby";
const me = (params.get("name") || "").trim().slice(0, 64) || `guest-${Math.random().toString(36).slice(2, 6)}`;

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);

// ANCHOR: common
/** The options every connection shares: this page's server, reconnecting quickly. */
const common = {
  host: location.host,
  protocol: location.protocol === "https:" ? "wss" : "ws",
  name: room,
  minReconnectionDelay: 500,
  maxReconnectionDelay: 5000,
};
// ANCHOR_END: common

/** Close codes after which the client gives up, as the agents client decides: 1008, 4xxx. */
const isTerminal = (code) => code === 1008 || (code >= 4000 && code <= 4999);

/**
 * Shows a socket's state in its badge: connecting until the first open, connected while
 * open, reconnecting after a close (PartySocket retries with backoff), closed for good after
 * a close the client does not retry.
 */
function trackStatus(client, id) {
  const badge = $(`status-${id}`);
  const show = (state) => {
    badge.dataset.state = state;
    badge.textContent = state;
  };
  client.addEventListener("open", () => show("connected"));
  client.addEventListener("close", (event) => show(isTerminal(event.code) ? "closed" : "reconnecting"));
  return show;
}

/** The path a client connects to, shown under each card's title. */
function showPath(id, agent) {
  $(`path-${id}`).textContent = `/agents/${agent}/${room}`;
}

/** Parses a text frame as JSON; the protocol's own frames (`cf_agent_*`) are skipped. */
function appFrame(event) {
  if (typeof event.data !== "string") return null;
  let frame;
  try {
    frame = JSON.parse(event.data);
  } catch {
    return null;
  }
  return typeof frame?.type === "string" && !frame.type.startsWith("cf_agent_") ? frame : null;
}

// --- chat: join / message / leave, broadcast by ChatRoom -------------------------------------

// ANCHOR: chat
const chat = new AgentClient({ ...common, agent: "ChatRoom", query: { username: me } });
trackStatus(chat, "chat");
showPath("chat", "chat-room");

function logLine(frame) {
  const item = document.createElement("li");
  if (frame.type === "message") {
    const user = document.createElement("span");
    user.className = "user";
    user.textContent = `${frame.user}: `;
    item.append(user, document.createTextNode(frame.text));
  } else {
    item.className = "event";
    item.textContent = `${frame.user} ${frame.type === "join" ? "joined" : "left"}`;
  }
  const log = $("chat-log");
  log.append(item);
  log.scrollTop = log.scrollHeight;
}

chat.addEventListener("message", (event) => {
  const frame = appFrame(event);
  if (frame && ["join", "message", "leave"].includes(frame.type)) logLine(frame);
});

$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text) return;
  chat.send(text); // ChatRoom broadcasts it to everyone, this page included
  input.value = "";
});
// ANCHOR_END: chat

// --- presence: the full list, re-sent by PresenceAgent on every join and leave ----------------

const presence = new AgentClient({ ...common, agent: "PresenceAgent", query: { name: me } });
trackStatus(presence, "presence");
showPath("presence", "presence-agent");

presence.addEventListener("message", (event) => {
  const frame = appFrame(event);
  if (frame?.type !== "presence") return;
  const list = $("presence-list");
  const people = Object.entries(frame.users).map(([id, user]) => {
    const item = document.createElement("li");
    item.textContent = id === presence.id ? `${user.name} (you)` : user.name;
    return item;
  });
  list.replaceChildren(...people);
});

// --- counter: synced state plus the `increment` callable -----------------------------------

// ANCHOR: counter
const counter = new AgentClient({
  ...common,
  agent: "Counter",
  onStateUpdate: (state) => {
    $("count").textContent = String(state.count);
  },
});
trackStatus(counter, "counter");
showPath("counter", "counter");

$("increment").addEventListener("click", async () => {
  const error = $("counter-error");
  try {
    await counter.call("increment");
    error.hidden = true;
  } catch (e) {
    error.textContent = e instanceof Error ? e.message : String(e);
    error.hidden = false;
  }
});
// ANCHOR_END: counter

$("room").textContent = room;
$("me").textContent = me;

// The hush web client: one page, no framework, over hush-wasm (the Rust client compiled to
// WebAssembly). Everything the client keeps is in IndexedDB, sealed with a key derived from
// the user's passphrase; the key itself stays in this page's memory unless the user asks
// to be kept signed in.

import init, { HushClient, qrCode } from "./hush_wasm.js";

const $ = (id) => document.getElementById(id);
const PBKDF2_ITERATIONS = 600000;
const ACCOUNT = "hush.account"; // the last device opened here: { user, device, key? }
const saltKey = (user, device) => `hush.salt.${user}.${device}`; // one salt per device, kept

const state = {
  client: null,
  me: null,
  chats: new Map(), // key "u:<user>" | "g:<id>" → chat
  current: null,
  ticks: new Map(), // message id → "queued" | "sent" | "delivered" | "read"
  presence: new Map(), // user → Presence
  transfers: new Map(), // message id or upload id → { done, total }
  files: new Map(), // message id → object URL of the downloaded file
  delayed: new Set(), // message id + reason already told
};

// Images up to this size are downloaded at once to show a preview; only raster types (an
// SVG is a document, not a picture).
const PREVIEW_MAX = 10 * 1024 * 1024;
const PREVIEW_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "image/avif"]);

// ---------------------------------------------------------------------------------------
// Words for every refusal.

const WORDS = {
  "relay-down": "The relay can't be reached. Messages wait here and go out when it's back.",
  "unknown-user": "There is no such user on this relay.",
  "mailbox-full": "Their mailbox is full. The message waits here and is retried.",
  "rate-limited": "Slow down: the relay is limiting how fast you send. Retrying shortly.",
  "too-large": "That is too large for the relay.",
  "wrong-key": "Wrong passphrase for this device.",
  "auth-failed": "The relay did not accept this device's key.",
  forbidden: "The relay refused that.",
  invalid: "That isn't valid",
  storage: "This browser could not save the data. Free some space and reload.",
  "wrong-relay": "This is not the relay this device belongs to.",
  "open-elsewhere": "This device is open in another tab or window. Close it there first.",
  delayed: "The relay is holding this message back for now; it is retried by itself.",
};

function human(err) {
  const code = err && err.code;
  const words = WORDS[code];
  if (words === WORDS.invalid) return `${words}: ${err.message.replace(/^invalid input: /, "")}.`;
  return words || (err && err.message) || String(err);
}

let toastTimer = null;
function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.hidden = true), 6000);
}

// ---------------------------------------------------------------------------------------
// Keys: PBKDF2-SHA-256 (WebCrypto) of the passphrase, with a salt kept per device.

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const unhex = (s) => new Uint8Array(s.match(/../g).map((h) => parseInt(h, 16)));

async function deriveKey(passphrase, salt) {
  const material = await crypto.subtle.importKey(
    "raw", new TextEncoder().encode(passphrase), "PBKDF2", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations: PBKDF2_ITERATIONS }, material, 256);
  return new Uint8Array(bits);
}

function savedAccount() {
  try {
    return JSON.parse(localStorage.getItem(ACCOUNT) || "null");
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------
// Opening a device.

function relayUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
}

async function open(user, device, storageKey) {
  const client = await HushClient.open({ relay: relayUrl(), user, device, storageKey });
  state.client = client;
  state.me = { user, device };
  $("signin").hidden = true;
  $("app").hidden = false;
  $("me-name").textContent = `${user} · device ${device}`;
  load();
  client.onEvent(onEvent);
  client.start();
  render();
}

async function signIn(e) {
  e.preventDefault();
  const user = $("signin-user").value.trim();
  const device = Number($("signin-device").value);
  const passphrase = $("signin-pass").value;
  const keep = $("signin-keep").checked;
  $("signin-error").textContent = "";
  $("signin-open").disabled = true;
  try {
    let salt = localStorage.getItem(saltKey(user, device));
    const earlier = savedAccount();
    if (!salt && earlier && earlier.salt && earlier.user === user && earlier.device === device) {
      salt = earlier.salt; // kept in the account entry by the first web client
      localStorage.setItem(saltKey(user, device), salt);
    }
    if (!salt) {
      salt = hex(crypto.getRandomValues(new Uint8Array(16)));
      localStorage.setItem(saltKey(user, device), salt);
    }
    const key = await deriveKey(passphrase, unhex(salt));
    await open(user, device, key);
    const account = { user, device };
    if (keep) account.key = hex(key);
    localStorage.setItem(ACCOUNT, JSON.stringify(account));
  } catch (err) {
    $("signin-error").textContent = human(err);
  } finally {
    $("signin-open").disabled = false;
  }
}

function signOut() {
  const account = savedAccount();
  if (account) {
    delete account.key;
    localStorage.setItem(ACCOUNT, JSON.stringify(account));
  }
  if (state.client) state.client.close();
  location.reload();
}

// ---------------------------------------------------------------------------------------
// Chats.

function chatKey(conversation) {
  return conversation.group ? `g:${conversation.group}` : `u:${conversation.direct}`;
}

function chat(key, name) {
  let c = state.chats.get(key);
  if (!c) {
    c = { key, name: name || key.slice(2), items: [], seen: new Set(), unread: 0, group: key.startsWith("g:") };
    state.chats.set(key, c);
    if (!c.group && state.client) state.client.watchPresence(key.slice(2));
  } else if (name) {
    c.name = name;
  }
  return c;
}

function readMark(key) {
  return Number(localStorage.getItem(`hush.read.${state.me.user}.${key}`) || 0);
}

function setReadMark(key, ms) {
  localStorage.setItem(`hush.read.${state.me.user}.${key}`, String(ms));
}

function addMessage(m, fresh) {
  const c = chat(chatKey(m.conversation));
  if (c.seen.has(m.id)) return c;
  c.seen.add(m.id);
  c.items.push({ kind: "message", message: m });
  if (!m.outgoing && m.serverMs > readMark(c.key) && !(fresh && isOpen(c))) c.unread += 1;
  return c;
}

function note(key, text) {
  chat(key).items.push({ kind: "note", text });
}

function load() {
  for (const g of state.client.groups()) chat(`g:${g.id}`, g.name);
  for (const m of state.client.messages()) {
    addMessage(m, false);
    if (m.outgoing) state.ticks.set(m.id, tickOf(state.client.receipts(m.id)));
  }
}

const RANK = { queued: 0, sent: 1, delivered: 2, read: 3 };

function tickOf(receipts) {
  let best = "queued";
  for (const r of receipts) {
    // The sender's own other devices do not make a message delivered or read.
    if (r.kind !== "sent" && r.by.user === state.me.user) continue;
    if (RANK[r.kind] > RANK[best]) best = r.kind;
  }
  return best;
}

function isOpen(c) {
  return state.current === c.key && document.visibilityState === "visible";
}

function markRead(c) {
  if (!isOpen(c)) return;
  const unread = new Map();
  let latest = readMark(c.key);
  for (const it of c.items) {
    if (it.kind !== "message" || it.message.outgoing) continue;
    const m = it.message;
    if (m.serverMs <= readMark(c.key)) continue;
    const from = `${m.from.user}\u0000${m.from.device}`;
    if (!unread.has(from)) unread.set(from, { from: m.from, ids: [] });
    unread.get(from).ids.push(m.id);
    latest = Math.max(latest, m.serverMs);
  }
  c.unread = 0;
  // The page counts them read once the receipts are kept (a closed tab loses none).
  Promise.all([...unread.values()].map(({ from, ids }) => state.client.markRead(from.user, from.device, ids)))
    .then(() => setReadMark(c.key, Math.max(latest, readMark(c.key))))
    .catch((err) => toast(human(err)));
}

// ---------------------------------------------------------------------------------------
// Events.

function onEvent(e) {
  switch (e.type) {
    case "connected":
      setConnection(true, "online");
      break;
    case "disconnected":
      setConnection(false, e.code ? human({ code: e.code, message: e.reason }) : "offline");
      break;
    case "message": {
      const c = addMessage(e.message, true);
      if (isOpen(c)) markRead(c);
      break;
    }
    case "receipt": {
      if (e.kind !== "sent" && e.by.user === state.me.user) break;
      const now = state.ticks.get(e.messageId) || "queued";
      if (RANK[e.kind] > RANK[now]) state.ticks.set(e.messageId, e.kind);
      break;
    }
    case "presence":
      state.presence.set(e.user, e);
      break;
    case "identityChanged":
      note(`u:${e.address.user}`,
        `${e.address.user}'s safety number changed (device ${e.address.device}). Compare it again before you trust new messages.`);
      break;
    case "group": {
      const c = chat(`g:${e.group}`, e.name || undefined);
      const who = e.member ? e.member.user : "";
      const words = {
        joined: `${e.by.user} added you to “${c.name}”`,
        added: `${e.by.user} added ${who}`,
        removed: `${e.by.user} removed ${who}`,
        left: `${who} left`,
        removedSelf: `${e.by.user} removed you`,
        roleChanged: `${who}'s role changed`,
      }[e.change];
      note(c.key, words);
      break;
    }
    case "sendDelayed":
      // Once per message and reason: the outbox retries by itself.
      if (!state.delayed.has(e.messageId + e.code)) {
        state.delayed.add(e.messageId + e.code);
        toast(human({ code: e.code }));
      }
      break;
    case "sendFailed":
      state.ticks.set(e.messageId, "failed");
      toast(human({ code: e.code, message: e.reason }));
      break;
    case "dropped":
      note(`u:${e.from.user}`, `A message from ${e.from.user} could not be read and was dropped (${e.reason}).`);
      break;
    default:
      return;
  }
  render();
}

function setConnection(online, text) {
  $("me-status").classList.toggle("on", online);
  $("me-conn").textContent = text;
}

// ---------------------------------------------------------------------------------------
// Rendering.

function lastSeen(p) {
  if (!p) return "";
  if (p.online) return "online";
  if (p.lastSeenMs == null) return "last seen hidden";
  const d = new Date(p.lastSeenMs);
  const today = new Date().toDateString() === d.toDateString();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return `last seen ${today ? "today" : d.toLocaleDateString()} at ${time}`;
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const c of children) if (c != null) node.append(c);
  return node;
}

const TICKS = { queued: "◷", sent: "✓", delivered: "✓✓", read: "✓✓", failed: "!" };

function renderChats() {
  const list = $("chats");
  // Rebuilt on every event: a keyboard user's focus stays on the chat it was on.
  const focused = list.contains(document.activeElement) ? document.activeElement.dataset.key : null;
  list.replaceChildren();
  const sorted = [...state.chats.values()].sort((a, b) => lastAt(b) - lastAt(a));
  for (const c of sorted) {
    const last = [...c.items].reverse().find((i) => i.kind === "message");
    const preview = last ? textOf(last.message) : c.group ? "group" : "";
    const p = c.group ? null : state.presence.get(c.key.slice(2));
    const item = el("li", { role: "option", tabIndex: 0, className: "chat" + (state.current === c.key ? " current" : "") },
      c.group
        ? el("span", { className: "group-icon", textContent: "#", ariaHidden: "true" })
        : el("span", { className: "dot" + (p && p.online ? " on" : ""), ariaHidden: "true" }),
      el("div", { className: "chat-text" },
        el("strong", { textContent: c.name }),
        el("div", { className: "muted small preview", textContent: preview })),
      c.unread ? el("span", { className: "badge", textContent: String(c.unread), ariaLabel: `${c.unread} unread` }) : null);
    item.setAttribute("aria-selected", String(state.current === c.key));
    item.dataset.key = c.key;
    item.addEventListener("click", () => select(c.key));
    item.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        select(c.key);
      }
    });
    list.append(item);
    if (c.key === focused) item.focus();
  }
}

function lastAt(c) {
  const last = [...c.items].reverse().find((i) => i.kind === "message");
  return last ? last.message.serverMs || last.message.sentMs : 0;
}

function textOf(m) {
  if (m.body.text !== undefined) return m.body.text;
  return `File: ${m.body.attachment.name}`;
}

function renderConversation() {
  const c = state.current && state.chats.get(state.current);
  $("composer").hidden = !c;
  $("safety").hidden = !c || c.group;
  $("add-member").hidden = !c || !c.group;
  $("app").classList.toggle("in-chat", !!c);
  if (!c) return;
  $("chat-name").textContent = c.name;
  $("chat-presence").textContent = c.group
    ? memberLine(c)
    : lastSeen(state.presence.get(c.key.slice(2)));
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren();
  for (const it of c.items) {
    if (it.kind === "note") {
      list.append(el("li", { className: "note", textContent: it.text }));
      continue;
    }
    if (it.kind === "upload") {
      list.append(el("li", { className: "bubble out" },
        el("div", { className: "body file-name", textContent: it.name }),
        progressBar(state.transfers.get(it.id), "Sending")));
      continue;
    }
    const m = it.message;
    const time = new Date(m.serverMs || m.sentMs).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const tick = m.outgoing ? state.ticks.get(m.id) || "queued" : null;
    list.append(el("li", { className: "bubble " + (m.outgoing ? "out" : "in") },
      c.group && !m.outgoing ? el("div", { className: "from", textContent: m.from.user }) : null,
      m.forwarded ? el("div", { className: "muted small", textContent: m.forwarded > 4 ? "Forwarded many times" : "Forwarded" }) : null,
      m.body.attachment ? attachmentView(m) : el("div", { className: "body", textContent: textOf(m) }),
      el("div", { className: "meta" },
        el("span", { textContent: time }),
        tick ? el("span", { className: `tick ${tick}`, textContent: TICKS[tick], title: tick, ariaLabel: tick }) : null)));
  }
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function size(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function progressBar(t, label) {
  if (!t) return null;
  const percent = Math.round((100 * t.done) / (t.total || 1));
  const bar = el("progress", { max: t.total || 1, value: t.done, className: "transfer" });
  bar.setAttribute("aria-label", `${label}: ${percent}%`);
  return el("div", { className: "transfer-row" }, bar,
    el("span", { className: "muted small", textContent: `${label} ${percent}% of ${size(t.total)}` }));
}

function attachmentView(m) {
  const a = m.body.attachment;
  const box = el("div", { className: "file" });
  const url = state.files.get(m.id);
  if (url && PREVIEW_TYPES.has(a.mime)) {
    box.append(el("img", { src: url, alt: a.name, className: "preview-img" }));
  } else if (!url && PREVIEW_TYPES.has(a.mime) && a.size <= PREVIEW_MAX && !state.transfers.has(m.id)) {
    // Fetched after this render, not during it.
    state.transfers.set(m.id, { done: 0, total: a.size });
    setTimeout(() => fetchFile(m).catch((err) => toast(human(err))));
  }
  box.append(el("div", { className: "body file-name", textContent: a.name }),
    el("div", { className: "muted small", textContent: `${a.mime || "file"} · ${size(a.size)}` }));
  const t = state.transfers.get(m.id);
  if (t) box.append(progressBar(t, "Downloading"));
  else {
    const save = el("button", { type: "button", className: "ghost save", textContent: "Save" });
    save.addEventListener("click", () => saveFile(m));
    box.append(save);
  }
  return box;
}

async function fetchFile(m) {
  const cached = state.files.get(m.id);
  if (cached) return cached;
  state.transfers.set(m.id, { done: 0, total: m.body.attachment.size });
  renderConversation();
  try {
    const bytes = await state.client.download(m.id, (done, total) => {
      state.transfers.set(m.id, { done, total });
      renderConversation();
    });
    const url = URL.createObjectURL(new Blob([bytes], { type: m.body.attachment.mime }));
    state.files.set(m.id, url);
    return url;
  } finally {
    state.transfers.delete(m.id);
    renderConversation();
  }
}

async function saveFile(m) {
  try {
    const url = await fetchFile(m);
    const a = el("a", { href: url, download: m.body.attachment.name });
    document.body.append(a);
    a.click();
    a.remove();
  } catch (err) {
    toast(human(err));
  }
}

let uploads = 0;
async function sendFile(file) {
  const key = state.current;
  if (!key || !file) return;
  const c = state.chats.get(key);
  const id = `upload-${++uploads}`;
  const item = { kind: "upload", id, name: file.name };
  c.items.push(item);
  state.transfers.set(id, { done: 0, total: file.size });
  render();
  try {
    const bytes = new Uint8Array(await file.arrayBuffer());
    const to = key.startsWith("g:") ? { group: key.slice(2) } : { direct: key.slice(2) };
    const messageId = await state.client.sendFile(to, file.name, file.type || "application/octet-stream", bytes,
      (done, total) => {
        state.transfers.set(id, { done, total });
        renderConversation();
      });
    state.ticks.set(messageId, "queued");
    if (PREVIEW_TYPES.has(file.type)) state.files.set(messageId, URL.createObjectURL(file));
    c.items.splice(c.items.indexOf(item), 1);
    const m = state.client.messages().find((m) => m.id === messageId);
    if (m) addMessage(m, true);
  } catch (err) {
    c.items.splice(c.items.indexOf(item), 1);
    toast(human(err));
  } finally {
    state.transfers.delete(id);
    render();
  }
}

function memberLine(c) {
  const g = state.client.groups().find((g) => `g:${g.id}` === c.key);
  if (!g) return "you are not a member";
  const users = [...new Set(g.members.map((m) => m.user))].filter((u) => u !== state.me.user);
  return `you, ${users.join(", ")}`;
}

function render() {
  renderChats();
  renderConversation();
}

function select(key) {
  state.current = key;
  const c = state.chats.get(key);
  if (c) markRead(c);
  render();
  $("text").focus();
}

// ---------------------------------------------------------------------------------------
// Actions.

async function send(e) {
  e.preventDefault();
  const text = $("text").value;
  if (!text.trim() || !state.current) return;
  $("text").value = "";
  try {
    const id = await (state.current.startsWith("g:")
      ? state.client.sendGroupText(state.current.slice(2), text)
      : state.client.sendText(state.current.slice(2), text));
    if (!state.ticks.has(id)) state.ticks.set(id, "queued");
    const m = state.client.messages().find((m) => m.id === id);
    if (m) addMessage(m, true);
  } catch (err) {
    $("text").value = text;
    toast(human(err));
  }
  render();
}

function newChat(e) {
  e.preventDefault();
  const user = $("new-chat-user").value.trim();
  if (!user) return;
  chat(`u:${user}`);
  $("new-chat-user").value = "";
  select(`u:${user}`);
}

async function newGroup(e) {
  e.preventDefault();
  const name = $("new-group-name").value.trim();
  const users = $("new-group-users").value.split(",").map((u) => u.trim()).filter(Boolean);
  if (!name) return;
  try {
    const id = await state.client.createGroup(name, users);
    chat(`g:${id}`, name);
    $("new-group-name").value = "";
    $("new-group-users").value = "";
    select(`g:${id}`);
  } catch (err) {
    toast(human(err));
  }
}

async function addMember() {
  const user = prompt("Add which user to this group?");
  if (!user || !state.current) return;
  try {
    await state.client.addToGroup(state.current.slice(2), user.trim());
  } catch (err) {
    toast(human(err));
  }
}

async function showSafety() {
  const user = state.current.slice(2);
  const list = $("safety-list");
  list.replaceChildren(el("p", { className: "muted", textContent: "Asking the relay for their devices…" }));
  $("safety-dialog").showModal();
  try {
    const numbers = await state.client.safetyNumbers(user);
    list.replaceChildren();
    if (!numbers.length) list.append(el("p", { textContent: `No devices of ${user} are known yet: send a first message.` }));
    for (const n of numbers) {
      const digits = el("p", { className: "digits", textContent: n.groups.join(" ") });
      const canvas = el("canvas", { className: "qr", width: 180, height: 180, ariaLabel: "QR code of the safety number", role: "img" });
      drawQr(canvas, n.scannable);
      list.append(el("section", { className: "safety" },
        el("h3", { textContent: `${n.address.user} · device ${n.address.device}${n.postQuantum ? " · post-quantum" : ""}` }),
        digits, canvas));
    }
  } catch (err) {
    list.replaceChildren(el("p", { className: "error", textContent: human(err) }));
  }
}

function drawQr(canvas, data) {
  const code = qrCode(data); // { size, modules: Uint8Array } (1 = dark)
  const ctx = canvas.getContext("2d");
  const quiet = 4;
  const scale = Math.floor(canvas.width / (code.size + 2 * quiet));
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#000";
  for (let y = 0; y < code.size; y++) {
    for (let x = 0; x < code.size; x++) {
      if (code.modules[y * code.size + x]) ctx.fillRect((x + quiet) * scale, (y + quiet) * scale, scale, scale);
    }
  }
}

// ---------------------------------------------------------------------------------------

async function main() {
  await init();
  $("signin-form").addEventListener("submit", signIn);
  $("composer").addEventListener("submit", send);
  $("text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) send(e);
  });
  $("attach").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", () => {
    const f = $("file").files[0];
    $("file").value = "";
    sendFile(f);
  });
  $("new-chat").addEventListener("submit", newChat);
  $("new-group").addEventListener("submit", newGroup);
  $("safety").addEventListener("click", showSafety);
  $("add-member").addEventListener("click", addMember);
  $("sign-out").addEventListener("click", signOut);
  $("back").addEventListener("click", () => {
    state.current = null;
    render();
  });
  document.addEventListener("visibilitychange", () => {
    const c = state.current && state.chats.get(state.current);
    if (c) {
      markRead(c);
      render();
    }
  });
  // Presence and "last seen" text age with time.
  setInterval(() => state.client && renderConversation(), 30000);

  const account = savedAccount();
  if (account && account.key) {
    try {
      await open(account.user, account.device, unhex(account.key));
      return;
    } catch (err) {
      $("signin-error").textContent = human(err);
    }
  }
  if (account) {
    $("signin-user").value = account.user;
    $("signin-device").value = account.device;
  }
  $("signin").hidden = false;
  $("signin-user").focus();
}

main();

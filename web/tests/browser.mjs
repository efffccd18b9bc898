// The web client in a real browser: Debian's chromium, driven by playwright-core, against a
// real `hush relay` on loopback, with a native `hush bot` (the Rust SDK) as a third user.
//
//   node tests/browser.mjs        (from web/; HUSH_BIN names the hush binary,
//                                  default ../target/debug/hush)
//
// Scenarios, in order, each checked in the page as a person sees it:
//   1. two browser users chat: the message arrives, the unread count shows, the three ticks
//      end at "read", the contact shows as online; a file goes with its progress bar, an
//      image shows as a preview, the other file is saved intact, and a file over the relay's
//      limit and a message to an unknown user get plain refusals;
//   2. a browser user and a native SDK user (hush bot) exchange messages one-to-one and in
//      a group the browser user creates: the WASM and native builds interoperate;
//   3. the page is reloaded: the conversation, its keys and its history survive
//      (IndexedDB), nothing is shown twice, and the conversation goes on; the same device in
//      a second tab is refused;
//   4. the relay is stopped and restarted mid-conversation: what was queued meanwhile
//      (kept when the tab is closed while offline) goes out once, none lost or duplicated;
//   5. a tampered envelope, injected by the test between the relay and the page, is dropped
//      (the page says so) and the conversation goes on.
// Screenshots of the main screens go to docs/screenshots/ (linked from the README).
// Every wait is bounded; the whole run stops by itself.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const bin = resolve(process.env.HUSH_BIN || join(root, "target", "debug", "hush"));
const shots = join(root, "docs", "screenshots");
const work = mkdtempSync(join(tmpdir(), "hush-web-"));
const PASS = "correct horse battery staple";
const T = 30000; // the longest any single wait may take
const MAX_BLOB_MIB = 2; // the relay's file limit in this test, to see the refusal

const procs = [];
let browser;

function fail(why) {
  throw new Error(why);
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
    s.on("error", rej);
  });
}

function run(args, name) {
  const p = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "warn" } });
  let log = "";
  p.stdout.on("data", (d) => (log += d));
  p.stderr.on("data", (d) => (log += d));
  p.log = () => log;
  p.name = name;
  procs.push(p);
  return p;
}

async function waitHttp(url) {
  const until = Date.now() + T;
  while (Date.now() < until) {
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  fail(`${url} did not answer`);
}

let port;
let relay;
async function startRelay() {
  relay = run(["relay", "--listen", `127.0.0.1:${port}`, "--db", join(work, "relay.db"), "--blob-dir", join(work, "blobs"),
    "--max-blob-mib", String(MAX_BLOB_MIB)], "relay");
  await waitHttp(`http://127.0.0.1:${port}/healthz`);
}

async function stopRelay() {
  const exited = new Promise((r) => relay.once("exit", r));
  relay.kill("SIGTERM");
  await Promise.race([exited, new Promise((r) => setTimeout(r, 10000))]);
  if (relay.exitCode === null) {
    relay.kill("SIGKILL");
    await exited;
  }
}

// Frames the test tampers with on their way from the relay to a page.
const tamper = new Map(); // page → count of envelope frames still to tamper

async function openPage(context, user, { screenshots } = {}) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${user}] page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") console.error(`[${user}] console: ${m.text()} (${JSON.stringify(m.location())})`);
  });
  await page.routeWebSocket(/\/v1\/ws$/, (ws) => {
    const server = ws.connectToServer();
    server.onMessage((message) => {
      // Pushed envelopes are the large binary frames; flip one byte in the middle, where
      // the ciphertext is.
      if (typeof message !== "string" && message.length > 300 && (tamper.get(page) || 0) > 0) {
        tamper.set(page, tamper.get(page) - 1);
        const copy = Buffer.from(message);
        copy[copy.length >> 1] ^= 0x5a;
        ws.send(copy);
        return;
      }
      ws.send(message);
    });
  });
  page.setDefaultTimeout(T);
  page.user = user;
  return page;
}

async function signIn(page, user) {
  await page.goto(`http://127.0.0.1:${port}/`);
  await page.locator("#signin-user").fill(user);
  await page.locator("#signin-device").fill("1");
  await page.locator("#signin-pass").fill(PASS);
  await page.locator("#signin-keep").check();
  await page.keyboard.press("Enter");
  await page.locator("#me-conn", { hasText: "online" }).waitFor();
}

async function openChat(page, key) {
  const item = page.locator(`li.chat[data-key="${key}"]`);
  await item.waitFor();
  // Keyboard only: focus the chat and press Enter.
  await item.focus();
  await page.keyboard.press("Enter");
  await page.locator(`li.chat.current[data-key="${key}"]`).waitFor();
}

async function say(page, text) {
  await page.locator("#text").fill(text);
  await page.keyboard.press("Enter");
}

const exactly = (text) => new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`);

function bubbles(page, text, dir) {
  return page.locator(`li.bubble.${dir} .body`, { hasText: exactly(text) });
}

async function once(page, text, dir) {
  await bubbles(page, text, dir).first().waitFor();
  // Anything repeated would have arrived with it: give it a moment, then count.
  await page.waitForTimeout(500);
  const n = await bubbles(page, text, dir).count();
  if (n !== 1) fail(`${page.user} shows "${text}" ${n} times`);
}

async function tickOf(page, text) {
  const b = page.locator("li.bubble.out", { has: page.locator(".body", { hasText: exactly(text) }) });
  return b.locator(".tick").first().getAttribute("title");
}

async function tickReaches(page, text, want) {
  const until = Date.now() + T;
  for (;;) {
    if ((await tickOf(page, text)) === want) return;
    if (Date.now() > until) fail(`${page.user}: "${text}" never showed ${want} (shows ${await tickOf(page, text)})`);
    await page.waitForTimeout(100);
  }
}

async function shot(page, name, size) {
  if (size) await page.setViewportSize(size);
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: join(shots, `${name}.png`) });
}

async function main() {
  port = await freePort();
  await startRelay();
  writeFileSync(join(work, "bot.rules"), "echo * => {rest}\n* => Send \"echo\" and some words.\n");
  const bot = run(["bot", "--relay", `ws://127.0.0.1:${port}`, "--user", "shopbot", "--data", join(work, "bot"), "--script", join(work, "bot.rules")], "bot");

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const desktop = { width: 1100, height: 720 };
  const aliceContext = await browser.newContext({ viewport: desktop });
  let alice = await openPage(aliceContext, "alice");
  const bob = await openPage(await browser.newContext({ viewport: desktop }), "bob");
  await signIn(alice, "alice");
  await signIn(bob, "bob");
  console.log("both signed in");

  // 1. Two browser users.
  await alice.locator("#new-chat-user").fill("bob");
  await alice.keyboard.press("Enter");
  await say(alice, "Hi Bob! This is hush in a browser.");
  await bob.locator('li.chat[data-key="u:alice"] .badge', { hasText: "1" }).waitFor();
  await shot(bob, "web-chats");
  await openChat(bob, "u:alice");
  await once(bob, "Hi Bob! This is hush in a browser.", "in");
  await tickReaches(alice, "Hi Bob! This is hush in a browser.", "read");
  await say(bob, "Hello Alice, the ticks work.");
  await once(alice, "Hello Alice, the ticks work.", "in");
  await alice.locator("#chat-presence", { hasText: "online" }).waitFor();
  console.log("1. two browser users: message, unread count, read ticks, presence");
  await shot(alice, "web-conversation");

  // Files: a progress bar while it goes, an image preview, a file saved intact, a refusal.
  const png = Buffer.from(await alice.evaluate(() => {
    const c = document.createElement("canvas");
    c.width = 240;
    c.height = 160;
    const g = c.getContext("2d");
    g.fillStyle = "#0f7b6c";
    g.fillRect(0, 0, 240, 160);
    g.fillStyle = "#fff";
    g.font = "28px sans-serif";
    g.fillText("hush photo", 40, 90);
    return Array.from(atob(c.toDataURL("image/png").split(",")[1]), (ch) => ch.charCodeAt(0));
  }));
  // The upload is held back a moment so that its progress bar can be seen.
  await alice.route("**/v1/blobs", async (r) => {
    await new Promise((res) => setTimeout(res, 1500));
    await r.continue();
  });
  await alice.locator("#file").setInputFiles({ name: "photo.png", mimeType: "image/png", buffer: png });
  await alice.locator("li.bubble.out progress.transfer").waitFor();
  await shot(alice, "web-file-progress");
  await alice.locator("li.bubble.out progress.transfer").waitFor({ state: "detached" });
  await alice.unroute("**/v1/blobs");
  const img = bob.locator("li.bubble.in img.preview-img");
  await img.waitFor();
  await bob.waitForFunction(() => {
    const i = document.querySelector("li.bubble.in img.preview-img");
    return i && i.complete && i.naturalWidth === 240;
  });
  const data = Buffer.alloc(300 * 1024 + 17, 0);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >> 8)) & 0xff;
  await alice.locator("#file").setInputFiles({ name: "notes.bin", mimeType: "application/octet-stream", buffer: data });
  const saveButton = bob.locator("li.bubble.in", { hasText: "notes.bin" }).locator("button.save");
  await saveButton.waitFor();
  const [download] = await Promise.all([bob.waitForEvent("download"), saveButton.click()]);
  const saved = await import("node:fs").then((fs) => download.path().then((p) => fs.readFileSync(p)));
  if (!saved.equals(data)) fail("the saved file differs from the one sent");
  await alice.locator("#file").setInputFiles({
    name: "too-big.bin", mimeType: "application/octet-stream", buffer: Buffer.alloc(MAX_BLOB_MIB * 1024 * 1024 + 1),
  });
  await alice.locator("#toast", { hasText: "too large" }).waitFor();
  console.log("   files: progress bar, image preview, saved intact, too large refused");

  // Writing to a user the relay does not know: a plain sentence, and the message is marked.
  await alice.locator("#new-chat-user").fill("nobody");
  await alice.locator("#new-chat-user").press("Enter");
  await say(alice, "Is anyone there?");
  await alice.locator("#toast", { hasText: "no such user" }).waitFor();
  await tickReaches(alice, "Is anyone there?", "failed");
  await openChat(alice, "u:bob");
  console.log("   an unknown user gets a plain refusal");
  await shot(bob, "web-files");

  // Safety numbers: digits and a QR code.
  await alice.locator("#safety").click();
  await alice.locator("#safety-list .digits").first().waitFor();
  const digits = (await alice.locator("#safety-list .digits").first().textContent()).replace(/\s/g, "");
  if (!/^\d{60}$/.test(digits)) fail(`safety number is not 60 digits: ${digits}`);
  await shot(alice, "web-safety-number");
  await alice.keyboard.press("Escape");

  // 2. With the native SDK (hush bot): one-to-one and in a group.
  await alice.locator("#new-chat-user").fill("shopbot");
  await alice.locator("#new-chat-user").press("Enter");
  await say(alice, "echo native and wasm agree");
  await once(alice, "native and wasm agree", "in");
  await alice.locator("#new-group-name").fill("Weekend");
  await alice.locator("#new-group-users").fill("bob, shopbot");
  await alice.locator("#new-group-users").press("Enter");
  await alice.locator("#chat-name", { hasText: "Weekend" }).waitFor();
  await say(alice, "echo hello group");
  await once(alice, "hello group", "in");
  const groupKey = await alice.locator("li.chat.current").getAttribute("data-key");
  await openChat(bob, groupKey);
  await once(bob, "echo hello group", "in");
  await once(bob, "hello group", "in");
  console.log("2. browser and native SDK: one-to-one and group, both directions");
  await shot(bob, "web-group");

  // 3. Reload: history and keys survive; the conversation goes on.
  await bob.reload();
  await bob.locator("#me-conn", { hasText: "online" }).waitFor();
  await openChat(bob, "u:alice");
  await once(bob, "Hi Bob! This is hush in a browser.", "in");
  await once(bob, "Hello Alice, the ticks work.", "out");
  await openChat(alice, "u:bob");
  await say(alice, "Still there after the reload?");
  await once(bob, "Still there after the reload?", "in");
  await say(bob, "Yes, keys and history survived.");
  await once(alice, "Yes, keys and history survived.", "in");
  console.log("3. reload: history, keys and sessions survive");

  // The same device in a second tab is refused (it would reuse ratchet state).
  const second = await openPage(bob.context(), "bob (second tab)");
  await second.goto(`http://127.0.0.1:${port}/`);
  await second.locator("#signin-error", { hasText: "another tab" }).waitFor();
  await second.close();
  console.log("   a second tab of the same device is refused");

  // 4. The relay stops and comes back mid-conversation.
  await stopRelay();
  await alice.locator("#me-conn", { hasText: "online" }).waitFor({ state: "detached" }).catch(() => {});
  await say(alice, "Sent while the relay was down.");
  await say(alice, "And a second one.");
  await bubbles(alice, "And a second one.", "out").waitFor();
  if ((await tickOf(alice, "Sent while the relay was down.")) !== "queued") fail("a message sent offline is not shown as queued");
  await shot(alice, "web-offline");
  // The tab is closed while they wait (the relay serves the page, so it cannot be reloaded
  // while down): what was queued is in IndexedDB, and goes out from the next tab.
  await alice.close();
  await startRelay();
  alice = await openPage(aliceContext, "alice");
  await alice.goto(`http://127.0.0.1:${port}/`);
  await alice.locator("#me-conn", { hasText: "online" }).waitFor();
  await openChat(alice, "u:bob");
  await once(alice, "And a second one.", "out");
  await once(bob, "Sent while the relay was down.", "in");
  await once(bob, "And a second one.", "in");
  const order = await bob.locator("li.bubble.in .body").allTextContents();
  if (order.indexOf("Sent while the relay was down.") > order.indexOf("And a second one.")) fail("queued messages arrived out of order");
  await tickReaches(alice, "And a second one.", "read");
  console.log("4. relay restart: queued messages went out once, in order");

  // 5. A tampered envelope is dropped; the conversation goes on.
  tamper.set(bob, 1);
  await say(alice, "This one is tampered with on the way.");
  await bob.locator("li.note", { hasText: "could not be read" }).waitFor();
  if ((await bubbles(bob, "This one is tampered with on the way.", "in").count()) !== 0) fail("a tampered message was shown");
  await say(alice, "And this one arrives intact.");
  await once(bob, "And this one arrives intact.", "in");
  console.log("5. a tampered envelope is dropped and the conversation goes on");

  // Phone-sized window.
  await shot(bob, "web-phone", { width: 390, height: 760 });
  if (bot.exitCode !== null) fail(`the bot exited: ${bot.log()}`);
  console.log("browser tests passed");
}

const deadline = setTimeout(() => {
  console.error("browser tests took more than 5 minutes");
  cleanup(1);
}, 300000);

async function cleanup(code) {
  clearTimeout(deadline);
  try {
    if (browser) await browser.close();
  } catch {}
  for (const p of procs) if (p.exitCode === null) p.kill("SIGKILL");
  rmSync(work, { recursive: true, force: true });
  process.exit(code);
}

main().then(
  () => cleanup(0),
  (e) => {
    console.error(e.stack || String(e));
    for (const p of procs) console.error(`--- ${p.name} log (last 2000 bytes)\n${p.log().slice(-2000)}`);
    cleanup(1);
  },
);

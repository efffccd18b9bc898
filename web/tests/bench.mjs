// hush in Chromium against hush on this machine: the same workloads (wasm/src/bench.rs),
// run by `benchmark()` in the page the relay serves and by the native example, printed as a
// table of microseconds per operation and ratios (docs/BENCHMARKS.md).
//
//   node tests/bench.mjs        (from web/; HUSH_BIN names the hush binary,
//                                default ../target/release/hush)
//
// Timings are measured, never asserted: this is not part of `.ci/run`.

import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const bin = resolve(process.env.HUSH_BIN || join(root, "target", "release", "hush"));
const work = mkdtempSync(join(tmpdir(), "hush-bench-"));
const port = 7390 + Math.floor(Math.random() * 500);

// The native build with the same profile as the WebAssembly one (web/build.sh).
const native = JSON.parse(
  execFileSync("cargo", ["run", "--release", "-q", "-p", "hush-wasm", "--example", "bench"], {
    cwd: root,
    env: {
      ...process.env,
      CARGO_PROFILE_RELEASE_LTO: "true",
      CARGO_PROFILE_RELEASE_CODEGEN_UNITS: "1",
      CARGO_TARGET_DIR: join(root, "target", "bench-native"),
    },
  }).toString(),
);
const relay = spawn(bin, ["relay", "--listen", `127.0.0.1:${port}`, "--db", join(work, "relay.db"), "--blob-dir", join(work, "blobs")], { stdio: "ignore" });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  for (let i = 0; ; i++) {
    try {
      await page.goto(`http://127.0.0.1:${port}/`);
      break;
    } catch (e) {
      if (i > 50) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  const wasm = JSON.parse(await page.evaluate(async () => {
    const m = await import("/hush_wasm.js");
    await m.default();
    return m.benchmark();
  }));
  console.log(`Chromium ${browser.version()}, ${new Date().toISOString().slice(0, 10)}`);
  console.log("| operation | native µs | Chromium µs | Chromium / native |");
  console.log("|---|---:|---:|---:|");
  for (const n of native) {
    const w = wasm.find((w) => w.name === n.name);
    console.log(`| ${n.name} | ${n.micros.toFixed(1)} | ${w.micros.toFixed(1)} | ${(w.micros / n.micros).toFixed(2)}× |`);
  }
} finally {
  await browser.close();
  relay.kill("SIGKILL");
  rmSync(work, { recursive: true, force: true });
}

// The browser client (web/) end to end: the release `tolk serve` with real models, Debian's
// Chromium driven by playwright-core, and JFK's "ask not" as the microphone
// (--use-file-for-fake-audio-capture, looped). Screenshots go to target/test-artifacts/browser/.
//
// Run by `make test-browser` (part of `make test`); needs `make build`, models/fetch (which
// installs chromium) and `npm ci` here.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createInterface } from "node:readline";
import { createServer, connect } from "node:net";
import { mkdirSync, mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const ROOT = resolve(import.meta.dirname, "../..");
const TOLK = join(ROOT, "target/release/tolk");
const MODELS = process.env.TOLK_MODELS_DIR ?? join(ROOT, "models/cache");
const JFK = join(MODELS, "testdata/jfk.wav");
const ARTIFACTS = join(ROOT, "target/test-artifacts/browser");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

for (const [what, path] of [["tolk (make build)", TOLK], ["JFK clip (models/fetch)", JFK], ["chromium (models/fetch)", CHROMIUM]]) {
  if (!existsSync(path)) throw new Error(`missing ${what}: ${path}`);
}
mkdirSync(ARTIFACTS, { recursive: true });

/** `tolk serve` on `bind` (127.0.0.1:0 picks a port); resolves once it listens. */
function serve(bind, extra = []) {
  const child = spawn(TOLK, ["serve", "--bind", bind, ...extra], {
    env: { ...process.env, TOLK_MODELS_DIR: MODELS },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolvePromise, reject) => {
    const lines = createInterface({ input: child.stdout });
    child.once("exit", (code) => reject(new Error(`tolk serve exited (${code}) before listening`)));
    lines.once("line", (line) => {
      const addr = line.match(/^tolk listening on http:\/\/(\S+)$/)?.[1];
      if (!addr) return reject(new Error(`unexpected first line from tolk serve: ${line}`));
      child.removeAllListeners("exit");
      resolvePromise({ child, addr, url: `http://${addr}/` });
    });
  });
}

function kill(server) {
  return new Promise((done) => {
    if (server.child.exitCode !== null) return done();
    server.child.once("exit", done);
    server.child.kill("SIGKILL");
  });
}

async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      `--use-file-for-fake-audio-capture=${JFK}`,
      "--autoplay-policy=no-user-gesture-required",
    ],
  });
}

/** A page of `url` that fails the test on any uncaught error or console error. */
async function open(browser, url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.problems = [];
  page.on("pageerror", (e) => page.problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // A refused WebSocket handshake is logged by Chromium itself; the page handles it.
    if (m.type() === "error" && !/WebSocket connection|Failed to load resource/.test(m.text())) {
      page.problems.push(`console: ${m.text()}`);
    }
  });
  await page.goto(url);
  return page;
}

const words = (text) => text.toLowerCase().replace(/[^a-z' ]+/g, " ").split(/\s+/).filter(Boolean);
const JFK_WORDS = new Set(words("And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."));

/** Committed text of #transcript (grey partials left out). */
const committed = (page) => page.$$eval("#transcript .committed", (spans) => spans.map((s) => s.textContent).join(" "));

async function waitFor(what, check, seconds, poll = 200) {
  const deadline = Date.now() + seconds * 1000;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last) return last;
    await new Promise((r) => setTimeout(r, poll));
  }
  throw new Error(`timed out after ${seconds} s waiting for ${what}`);
}

describe("browser client", () => {
  let server;
  let browser;

  before(async () => {
    server = await serve("127.0.0.1:0");
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    if (server) await kill(server);
  });

  test("the page lists the server's languages and pairs", async () => {
    const page = await open(browser, server.url);
    await page.waitForSelector("#start:not([disabled])");
    const sources = await page.$$eval("#source-lang option", (o) => o.map((x) => x.value));
    assert.ok(sources.includes("auto") && sources.includes("en") && sources.includes("es"), `sources ${sources}`);
    await page.selectOption("#source-lang", "en");
    const targets = await page.$$eval("#target-lang option", (o) => o.map((x) => x.value));
    assert.ok(targets.includes("pt") && targets.includes(""), `targets from en: ${targets}`);
    assert.ok(!targets.includes("en"), "a language is not offered as its own translation");
    assert.equal(await page.textContent("#start"), "Start");
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });

  test("JFK spoken into the microphone appears in #transcript while it plays", async () => {
    const page = await open(browser, server.url);
    await page.waitForSelector("#start:not([disabled])");
    await page.selectOption("#source-lang", "en");
    await page.selectOption("#target-lang", "");
    const clicked = Date.now();
    await page.click("#start");
    assert.equal(await page.textContent("#start"), "Stop");

    let peak = 0;
    let sawPartial = false;
    const firstWords = await waitFor(
      "the first words",
      async () => {
        peak = Math.max(peak, await page.$eval("#level", (m) => m.value));
        sawPartial ||= (await page.$$("#transcript .partial")).length > 0;
        return (await page.textContent("#transcript")).trim().length > 0;
      },
      30,
    );
    const firstWordsAfter = Date.now() - clicked;
    assert.ok(firstWords);
    await waitFor(
      "every word of JFK's sentence, committed",
      async () => {
        peak = Math.max(peak, await page.$eval("#level", (m) => m.value));
        sawPartial ||= (await page.$$("#transcript .partial")).length > 0;
        const heard = new Set(words(await committed(page)));
        return [...JFK_WORDS].every((w) => heard.has(w));
      },
      45,
    );
    assert.ok(peak > 0.3, `the level meter moved (peak ${peak})`);
    assert.ok(sawPartial, "an unstable partial was shown before it was committed");
    assert.equal(await page.getAttribute("#status", "data-state"), "streaming");
    const latency = Number(await page.getAttribute("#latency", "data-ms"));
    assert.ok(latency > 0 && latency < 10000, `latency figure ${latency} ms`);
    await page.screenshot({ path: join(ARTIFACTS, "jfk-transcript.png"), fullPage: true });

    await page.click("#start"); // Stop
    await waitFor("Start again after the final result", async () => (await page.textContent("#start")) === "Start", 20);
    assert.equal(await page.getAttribute("#status", "data-state"), "ready");
    assert.equal((await page.$$("#transcript .partial")).length, 0, "no unstable tail is left after the stream ends");
    assert.deepEqual(page.problems, []);
    console.log(`first words on screen ${firstWordsAfter} ms after Start; latency figure ${latency} ms`);
    await page.context().close();
  });

  test("translation into Portuguese is shown and spoken", async () => {
    const page = await open(browser, server.url);
    await page.waitForSelector("#start:not([disabled])");
    await page.selectOption("#source-lang", "en");
    await page.selectOption("#target-lang", "pt");
    await page.check("#tts");
    await page.click("#start");
    await waitFor(
      "Portuguese in #translation",
      async () => /país/i.test(await page.textContent("#translation")),
      45,
    );
    await waitFor("speech played", async () => Number(await page.getAttribute("#spoken", "data-count")) >= 1, 30);
    await page.screenshot({ path: join(ARTIFACTS, "jfk-translation.png"), fullPage: true });
    await page.click("#start");
    await waitFor("Start again", async () => (await page.textContent("#start")) === "Start", 30);
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });

  test("a dropped connection is told, retried with backoff, and the stream goes on", async () => {
    const page = await open(browser, server.url);
    await page.waitForSelector("#start:not([disabled])");
    await page.selectOption("#source-lang", "en");
    await page.selectOption("#target-lang", "");
    await page.click("#start");
    await waitFor("committed words", async () => (await committed(page)).trim().length > 0, 30);

    const addr = server.addr;
    await kill(server);
    const told = await waitFor(
      "the reconnecting notice",
      async () => {
        const state = await page.getAttribute("#status", "data-state");
        const text = await page.textContent("#status");
        return state === "reconnecting" && /Reconnecting in/.test(text) ? text : null;
      },
      10,
      50,
    );
    assert.match(told, /attempt \d+/);
    assert.equal(await page.textContent("#start"), "Stop", "the person is still streaming");
    // Let a few attempts fail (backoff), then bring the server back on the same address.
    await new Promise((r) => setTimeout(r, 2500));
    server = await serve(addr);
    await waitFor("streaming again", async () => (await page.getAttribute("#status", "data-state")) === "streaming", 30);
    await waitFor(
      "new words in a new paragraph after the gap",
      async () => {
        const paragraphs = await page.$$eval("#transcript p.stream", (ps) =>
          ps.map((p) => ({ gap: !!p.querySelector(".gap"), text: [...p.querySelectorAll(".committed")].map((s) => s.textContent).join("") })),
        );
        return paragraphs.length >= 2 && paragraphs[0].gap && paragraphs.at(-1).text.trim().length > 0;
      },
      45,
    );
    await page.screenshot({ path: join(ARTIFACTS, "reconnected.png"), fullPage: true });
    await page.click("#start");
    await waitFor("Start again", async () => (await page.textContent("#start")) === "Start", 20);
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });
});

/** A TCP proxy to `addr` whose connections can all be cut at once: a network blip. */
async function blippyProxy(addr) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(":")), Number(addr.slice(addr.lastIndexOf(":") + 1))];
  const live = new Set();
  const proxy = createServer((client) => {
    const upstream = connect(port, host);
    for (const [a, b] of [[client, upstream], [upstream, client]]) {
      a.pipe(b);
      a.on("error", () => b.destroy());
      a.on("close", () => b.destroy());
      live.add(a);
      a.on("close", () => live.delete(a));
    }
  });
  await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${proxy.address().port}/`,
    cut: () => {
      for (const socket of live) socket.destroy();
    },
    close: () => proxy.close(),
  };
}

describe("browser client through a network that drops", () => {
  let server;
  let browser;
  let proxy;

  before(async () => {
    server = await serve("127.0.0.1:0");
    proxy = await blippyProxy(server.addr);
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    proxy?.close();
    if (server) await kill(server);
  });

  test("a blip is resumed: the same stream goes on and no words are lost", async () => {
    const page = await open(browser, proxy.url);
    await page.waitForSelector("#start:not([disabled])");
    await page.selectOption("#source-lang", "en");
    await page.selectOption("#target-lang", "");
    await page.click("#start");
    await waitFor("committed words", async () => (await committed(page)).trim().length > 0, 30);

    proxy.cut(); // both directions die without a WebSocket close
    await waitFor("the reconnecting notice", async () => (await page.getAttribute("#status", "data-state")) === "reconnecting", 10, 50);
    const notices = new Set();
    await waitFor(
      "streaming again",
      async () => {
        notices.add(await page.textContent("#notice"));
        return (await page.getAttribute("#status", "data-state")) === "streaming";
      },
      20,
      50,
    );
    notices.add(await page.textContent("#notice"));
    assert.ok(
      [...notices].some((n) => /Reconnected: the stream went on/.test(n)),
      `the person is told: ${[...notices].join(" | ")}`,
    );
    // Words spoken after the blip arrive in the same stream (one paragraph, no gap mark).
    const before = words(await committed(page)).length;
    await waitFor(
      "more committed words after the resume",
      async () => words(await committed(page)).length > before + 5,
      40,
    );
    assert.equal(await page.locator("#transcript p.stream").count(), 1, "one stream throughout");
    assert.equal(await page.locator("#transcript .gap").count(), 0, "nothing was lost");
    const heard = new Set(words(await committed(page)));
    for (const w of ["fellow", "americans", "country"]) assert.ok(heard.has(w), `${w} missing: ${[...heard]}`);
    await page.screenshot({ path: join(ARTIFACTS, "resumed.png"), fullPage: true });
    await page.click("#start");
    await waitFor("Start again", async () => (await page.textContent("#start")) === "Start", 20);
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });
});

describe("browser client against a server that requires a key", () => {
  let server;
  let browser;
  let key;
  let scratch;

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), "tolk-browser-"));
    const keys = join(scratch, "keys.json");
    const created = spawnSync(TOLK, ["keys", "create", "--name", "browser", "--tier", "enterprise", "--keys-file", keys, "--json"], {
      encoding: "utf8",
    });
    assert.equal(created.status, 0, created.stderr);
    key = JSON.parse(created.stdout).key;
    server = await serve("127.0.0.1:0", ["--auth-mode", "required", "--keys-file", keys]);
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    if (server) await kill(server);
    rmSync(scratch, { recursive: true, force: true });
  });

  test("asks for a key in words, refuses a wrong one, streams with the right one", async () => {
    const page = await open(browser, server.url);
    await page.waitForSelector("#credentials:not([hidden])");
    assert.match(await page.textContent("#notice"), /needs an API key or token/);
    assert.ok(await page.isDisabled("#start"));

    await page.fill("#token", "tolk_AAAAAAAAAAAA_" + "B".repeat(40));
    await page.click("#credentials button[type=submit]");
    await waitFor("the refusal", async () => /was not accepted/.test(await page.textContent("#notice")), 10);
    assert.ok(await page.isVisible("#credentials"));

    await page.fill("#token", key);
    await page.click("#credentials button[type=submit]");
    await page.waitForSelector("#start:not([disabled])");
    assert.ok(await page.isHidden("#credentials"));
    await page.selectOption("#source-lang", "en");
    await page.selectOption("#target-lang", "");
    await page.click("#start");
    // The WebSocket carries the key as a `bearer.<key>` subprotocol.
    await waitFor("words streamed with the key", async () => words(await committed(page)).includes("country"), 45);
    await page.click("#start");
    await waitFor("Start again", async () => (await page.textContent("#start")) === "Start", 20);
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });
});

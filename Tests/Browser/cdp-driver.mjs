// A headless Chromium driven over the DevTools protocol on a pipe (no WebSocket, no npm
// packages): the test suite's real browser. Commands come one per line on stdin, each answered
// with one line on stdout:
//   open URL              -> ok
//   wait SECONDS EXPR     -> ok VALUE | timeout LAST-VALUE   (polls EXPR until truthy)
//   eval EXPR             -> ok VALUE
//   shot PATH             -> ok                              (PNG of the page)
//   errors                -> ok [exceptions and console errors so far]
//   quit
// Usage: node cdp-driver.mjs [chromium-path]
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const chromium = process.argv[2] || "/usr/bin/chromium";
const profile = mkdtempSync(join(tmpdir(), "grid-chromium-"));
const browser = spawn(chromium, [
  "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
  "--remote-debugging-pipe", `--user-data-dir=${profile}`, "--window-size=1400,1000", "about:blank",
], { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] });
let browserLog = "";
browser.stdio[2].on("data", (d) => { browserLog = (browserLog + d).slice(-4000); });

let nextId = 1;
const pending = new Map();
const errors = [];
let sessionId = null;
let buffer = "";
browser.stdio[4].on("data", (chunk) => {
  buffer += chunk.toString("utf8");
  let end;
  while ((end = buffer.indexOf("\0")) >= 0) {
    const message = JSON.parse(buffer.slice(0, end));
    buffer = buffer.slice(end + 1);
    if (message.id && pending.has(message.id)) {
      const { resolve, reject } = pending.get(message.id);
      pending.delete(message.id);
      message.error ? reject(new Error(JSON.stringify(message.error))) : resolve(message.result);
    } else if (message.method === "Runtime.exceptionThrown") {
      errors.push("exception: " + (message.params.exceptionDetails.exception?.description || message.params.exceptionDetails.text));
    } else if (message.method === "Runtime.consoleAPICalled" && message.params.type === "error") {
      errors.push("console.error: " + message.params.args.map((a) => a.value ?? a.description).join(" "));
    }
  }
});

function send(method, params = {}, session = sessionId) {
  const id = nextId++;
  const message = { id, method, params };
  if (session) message.sessionId = session;
  browser.stdio[3].write(JSON.stringify(message) + "\0");
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    setTimeout(() => { if (pending.delete(id)) reject(new Error(`${method}: no answer in 30 s; chromium said: ${browserLog}`)); }, 30000);
  });
}

async function evaluate(expression) {
  const r = await send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true });
  if (r.exceptionDetails) return { error: r.exceptionDetails.exception?.description || r.exceptionDetails.text };
  return { value: r.result.value };
}

async function setUp() {
  const { targetId } = await send("Target.createTarget", { url: "about:blank" }, null);
  ({ sessionId } = await send("Target.attachToTarget", { targetId, flatten: true }, null));
  await send("Page.enable");
  await send("Runtime.enable");
}

const say = (line) => process.stdout.write(line.replace(/\n/g, " ") + "\n");
const ready = setUp();
const lines = createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on("line", (line) => { queue = queue.then(() => run(line)); });
lines.on("close", () => { queue.then(() => finish(0)); });

async function run(line) {
  const [command, ...rest] = line.split(" ");
  try {
    await ready;
    if (command === "open") {
      await send("Page.navigate", { url: rest[0] });
      say("ok");
    } else if (command === "wait") {
      const deadline = Date.now() + Number(rest[0]) * 1000;
      const expression = rest.slice(1).join(" ");
      let last;
      for (;;) {
        last = await evaluate(expression);
        if (last.value) { say("ok " + JSON.stringify(last.value)); return; }
        if (Date.now() > deadline) { say("timeout " + JSON.stringify(last)); return; }
        await new Promise((r) => setTimeout(r, 150));
      }
    } else if (command === "eval") {
      say("ok " + JSON.stringify(await evaluate(rest.join(" "))));
    } else if (command === "shot") {
      const { data } = await send("Page.captureScreenshot", { format: "png", captureBeyondViewport: true });
      writeFileSync(rest.join(" "), Buffer.from(data, "base64"));
      say("ok");
    } else if (command === "errors") {
      say("ok " + JSON.stringify(errors));
    } else if (command === "quit") {
      finish(0);
    } else {
      say("error unknown command " + command);
    }
  } catch (e) {
    say("error " + e.message);
  }
}

function finish(code) {
  try { browser.kill("SIGKILL"); } catch {}
  try { rmSync(profile, { recursive: true, force: true }); } catch {}
  process.exit(code);
}

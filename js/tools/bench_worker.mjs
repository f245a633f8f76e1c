#!/usr/bin/env node
// A benchmark worker for benchmarks/js_runtime.py: one runtime (Node's onnxruntime-node, or Chromium's
// onnxruntime-web WASM in a page) driven by line-delimited JSON on stdin, one reply line per command:
//   {"cmd": "open", "package": DIR, "task": T, "threads": N}       -> {"ok": true, "seconds": open+first call}
//   {"cmd": "unet", "calls": K}                                    -> {"seconds": [K per-call times]}
//   {"cmd": "generate", "prompt": P, "seed": S, "steps": N|null}   -> {"seconds": end-to-end image time}
//   {"cmd": "quit"}
// Usage: node tools/bench_worker.mjs node|wasm
import { createInterface } from 'node:readline';
import { openPackage } from '../src/index.js';

const mode = process.argv[2];
/** @type {any} */
let state = null;

/** Fixed inputs of the task's UNet graph (seeded; the values do not change the time). */
function inputsFor(/** @type {any} */ g) {
  let s = 1;
  const rand = (/** @type {number} */ n) => Float32Array.from({ length: n }, () => ((s = (s * 16807) % 2147483647) / 2147483647) * 2 - 1);
  const [x, , h] = g.inputs;
  const size = (/** @type {number[]} */ shape) => shape.reduce((a, b) => a * b, 1);
  return [{ data: rand(size(x.shape)), shape: x.shape }, { data: Float32Array.of(500), shape: [1] }, { data: rand(size(h.shape)), shape: h.shape }];
}

// --- Node ---------------------------------------------------------------------------------------------
async function nodeOpen(/** @type {any} */ c) {
  const t0 = performance.now();
  const pkg = await openPackage(c.package, { threads: c.threads });
  const call = await pkg.unet(c.task);
  const args = inputsFor(pkg.graph(c.task));
  await call(...args);
  state = { pkg, call, args, task: c.task };
  return { ok: true, seconds: (performance.now() - t0) / 1000 };
}

// --- Chromium (WASM) ---------------------------------------------------------------------------------
async function wasmOpen(/** @type {any} */ c) {
  const { launch, PAGE } = await import('./browser.mjs');
  const { serve } = await import('./serve.mjs');
  const { dirname, join } = await import('node:path');
  const { fileURLToPath } = await import('node:url');
  const js = join(dirname(fileURLToPath(import.meta.url)), '..');
  const server = await serve({ '/js/': js, '/pkg/': c.package }, { '/': PAGE });
  const browser = await launch();
  const page = await browser.context.newPage();
  await page.goto(`${server.url}/`);
  const r = await page.evaluate(async ({ task, threads, inputsSrc }) => {
    const ort = await import('onnxruntime-web');
    ort.env.wasm.numThreads = threads;
    const m = await import('/js/src/index.js');
    const t0 = performance.now();
    const w = /** @type {any} */ (globalThis);
    w.pkg = await m.openPackage('/pkg/', { threads });
    w.call = await w.pkg.unet(task);
    w.args = (0, eval)(`(${inputsSrc})`)(w.pkg.graph(task));
    await w.call(...w.args);
    return { seconds: (performance.now() - t0) / 1000, isolated: crossOriginIsolated, threads: ort.env.wasm.numThreads };
  }, { task: c.task, threads: c.threads, inputsSrc: inputsFor.toString() });
  state = { server, browser, page, task: c.task };
  return { ok: true, ...r };
}

async function handle(/** @type {any} */ c) {
  if (c.cmd === 'open') return mode === 'node' ? nodeOpen(c) : wasmOpen(c);
  if (c.cmd === 'unet') {
    if (mode === 'node') {
      const out = [];
      for (let k = 0; k < c.calls; k++) {
        const t0 = performance.now();
        await state.call(...state.args);
        out.push((performance.now() - t0) / 1000);
      }
      return { seconds: out };
    }
    return { seconds: await state.page.evaluate(async (calls) => {
      const w = /** @type {any} */ (globalThis);
      const out = [];
      for (let k = 0; k < calls; k++) {
        const t0 = performance.now();
        await w.call(...w.args);
        out.push((performance.now() - t0) / 1000);
      }
      return out;
    }, c.calls) };
  }
  if (c.cmd === 'generate') {
    const opts = { prompt: c.prompt, seed: c.seed, steps: c.steps ?? null, scheduler: c.scheduler ?? 'ddim' };
    if (mode === 'node') {
      const t0 = performance.now();
      await state.pkg.generate(state.task, opts);
      return { seconds: (performance.now() - t0) / 1000 };
    }
    return { seconds: await state.page.evaluate(async ({ task, opts }) => {
      const t0 = performance.now();
      await /** @type {any} */ (globalThis).pkg.generate(task, opts);
      return (performance.now() - t0) / 1000;
    }, { task: state.task, opts }) };
  }
  if (c.cmd === 'quit') {
    if (state?.browser) { await state.browser.close(); await state.server.close(); }
    if (state?.pkg) await state.pkg.close();
    return { ok: true, quit: true };
  }
  return { error: `unknown command ${c.cmd}` };
}

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  let reply;
  try {
    reply = await handle(JSON.parse(line));
  } catch (e) {
    reply = { error: `${/** @type {Error} */ (e).name}: ${/** @type {Error} */ (e).message}` };
  }
  process.stdout.write(`${JSON.stringify(reply)}\n`);
  if (reply.quit) process.exit(0);
}

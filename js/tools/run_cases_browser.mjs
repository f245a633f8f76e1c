#!/usr/bin/env node
// Runs generate cases (see run_cases.mjs) in headless Chromium with onnxruntime-web and writes the same
// outputs: node tools/run_cases_browser.mjs CASES.json OUT_DIR [wasm|webgpu]
// Packages are served from 127.0.0.1 (cross-origin isolated) and opened by URL: the fetched-package path.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, page as pageHtml } from './browser.mjs';
import { serve } from './serve.mjs';

const [casesPath, outDir, ep = 'wasm'] = process.argv.slice(2);
const { cases } = JSON.parse(readFileSync(casesPath, 'utf8'));
mkdirSync(outDir, { recursive: true });
const js = join(dirname(fileURLToPath(import.meta.url)), '..');
/** @type {Record<string, string>} */
const roots = { '/js/': js };
const pkgUrl = new Map();
const fileUrl = new Map();
for (const c of cases) {
  if (!pkgUrl.has(c.package)) {
    pkgUrl.set(c.package, `/pkg${pkgUrl.size}/`);
    roots[`/pkg${pkgUrl.size - 1}/`] = c.package;
  }
  for (const key of ['image', 'mask']) {
    const p = c.options[key];
    if (p && !fileUrl.has(p)) {
      fileUrl.set(p, `/file${fileUrl.size}/${p.split('/').pop()}`);
      roots[`/file${fileUrl.size - 1}/`] = dirname(p);
    }
  }
}
const server = await serve(roots, { '/': pageHtml(ep === 'webgpu') });
const browser = await launch({ gpu: ep === 'webgpu' });
const results = {};
try {
  const page = await browser.context.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(m.text()));
  page.on('pageerror', (e) => logs.push(String(e)));
  await page.goto(`${server.url}/`);
  const isolated = await page.evaluate(() => globalThis.crossOriginIsolated);
  for (const c of cases) {
    const browserCase = { ...c, package: pkgUrl.get(c.package), options: { ...c.options } };
    for (const key of ['image', 'mask']) if (c.options[key]) browserCase.options[key] = fileUrl.get(c.options[key]);
    const r = await page.evaluate(async ({ c, ep }) => {
      const m = await import('/js/src/index.js');
      const w = /** @type {any} */ (globalThis);
      w.pkgs ??= {};
      const t0 = performance.now();
      try {
        w.pkgs[c.package] ??= await m.openPackage(c.package, { executionProviders: ep === 'webgpu' ? ['webgpu', 'wasm'] : ['wasm'] });
        const opts = { ...c.options };
        for (const key of ['image', 'mask']) if (opts[key]) opts[key] = new Uint8Array(await (await fetch(opts[key])).arrayBuffer());
        const x = await w.pkgs[c.package].sample(c.task, opts);
        const rgba = m.toRgba(x);
        const b64 = (/** @type {Uint8Array} */ u) => { let s = ''; for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode(...u.subarray(i, i + 0x8000)); return btoa(s); };
        const all = new Uint8Array(rgba.reduce((n, im) => n + im.data.length, 0));
        let pos = 0;
        for (const im of rgba) { all.set(im.data, pos); pos += im.data.length; }
        return { shape: x.shape, f32: b64(new Uint8Array(x.data.buffer)), rgba: b64(all), seconds: (performance.now() - t0) / 1000 };
      } catch (e) {
        return { error: `${/** @type {Error} */ (e).name}: ${/** @type {Error} */ (e).message}` };
      }
    }, { c: browserCase, ep });
    if (r.error) results[c.id] = { error: r.error };
    else {
      writeFileSync(join(outDir, `${c.id}.f32`), Buffer.from(r.f32, 'base64'));
      writeFileSync(join(outDir, `${c.id}.rgba`), Buffer.from(r.rgba, 'base64'));
      results[c.id] = { shape: r.shape, seconds: r.seconds };
    }
  }
  const gpu = await page.evaluate(async () => { const a = await navigator.gpu?.requestAdapter(); return a ? (a.info?.description || a.info?.vendor || 'adapter') : null; });
  results._browser = { isolated, gpu, version: browser.context.browser()?.version() ?? null, logs: logs.slice(-20) };
} finally {
  await browser.close();
  await server.close();
}
writeFileSync(join(outDir, 'results.json'), JSON.stringify(results, null, 1));

#!/usr/bin/env node
// Drives the demo page's live panel in headless Chromium, as a reader would:
//   node tools/drive_live_panel.mjs URL OUT_DIR RUNS.json
// RUNS.json: [ { "id", "task", "prompt", "seed", "scheduler", "steps", "image"?: PNG path, "mask"?: PNG path } ]
// For each run: fills the panel, clicks Generate, waits, and writes OUT_DIR/<id>.rgba (the canvas's pixels)
// and OUT_DIR/results.json ({ id: { width, height, seconds, error, status } }).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { launch } from './browser.mjs';

const [url, outDir, runsPath] = process.argv.slice(2);
const runs = JSON.parse(readFileSync(runsPath, 'utf8'));
mkdirSync(outDir, { recursive: true });
const browser = await launch();
const results = {};
try {
  const page = await browser.context.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(m.text()));
  page.on('pageerror', (e) => logs.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => window.taskfoldLive?.ready, null, { timeout: 60000 });
  results._page = { isolated: await page.evaluate(() => crossOriginIsolated) };
  for (const r of runs) {
    await page.selectOption('#live-task', r.task);
    await page.fill('#live-prompt', r.prompt ?? '');
    await page.fill('#live-seed', String(r.seed ?? 0));
    await page.selectOption('#live-scheduler', r.scheduler ?? 'ddim');
    await page.fill('#live-steps', r.steps ? String(r.steps) : '');
    await page.setInputFiles('#live-image', r.image ? [r.image] : []);
    await page.setInputFiles('#live-mask', r.mask ? [r.mask] : []);
    await page.evaluate(() => { window.taskfoldLive.images = null; window.taskfoldLive.error = null; });
    await page.click('#live-run');
    await page.waitForFunction(() => window.taskfoldLive.images || window.taskfoldLive.error, null, { timeout: 300000 });
    const got = await page.evaluate(() => {
      const live = window.taskfoldLive;
      const c = document.getElementById('live-out');
      const px = live.error ? null : Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
      return { error: live.error, seconds: live.seconds, width: c.width, height: c.height, px, status: document.getElementById('live-status').textContent };
    });
    if (got.px) writeFileSync(join(outDir, `${r.id}.rgba`), Uint8Array.from(got.px));
    results[r.id] = { error: got.error, seconds: got.seconds, width: got.width, height: got.height, status: got.status };
  }
  results._page.logs = logs.slice(-20);
} finally {
  await browser.close();
}
writeFileSync(join(outDir, 'results.json'), JSON.stringify(results, null, 1));

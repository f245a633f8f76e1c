#!/usr/bin/env node
// Runs generate cases with the Node runtime and writes each result for a comparison:
//   node tools/run_cases.mjs CASES.json OUT_DIR
// CASES.json: { "cases": [ { "id", "package" (folder or URL), "task", "options": { prompt, image, mask, steps,
// scheduler, seed, strength, guidance, imageGuidance, numImages, negativePrompt } } ] } with image/mask as PNG paths.
// Writes OUT_DIR/<id>.f32 (the [-1, 1] images, float32 little-endian, C order), OUT_DIR/<id>.rgba (the RGBA
// bytes generate() returns) and OUT_DIR/results.json (shape, seconds, error per case).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openPackage, toRgba } from '../src/index.js';

const [casesPath, outDir] = process.argv.slice(2);
const { cases } = JSON.parse(readFileSync(casesPath, 'utf8'));
mkdirSync(outDir, { recursive: true });
/** @type {Map<string, any>} */
const open = new Map();
const results = {};
for (const c of cases) {
  const t0 = performance.now();
  try {
    if (!open.has(c.package)) open.set(c.package, await openPackage(c.package));
    const pkg = open.get(c.package);
    const x = await pkg.sample(c.task, c.options);
    writeFileSync(join(outDir, `${c.id}.f32`), new Uint8Array(x.data.buffer, x.data.byteOffset, x.data.byteLength));
    const rgba = toRgba(x);
    writeFileSync(join(outDir, `${c.id}.rgba`), Buffer.concat(rgba.map((im) => Buffer.from(im.data.buffer))));
    results[c.id] = { shape: x.shape, seconds: (performance.now() - t0) / 1000 };
  } catch (e) {
    results[c.id] = { error: `${e.name}: ${e.message}` };
  }
}
for (const p of open.values()) await p.close();
writeFileSync(join(outDir, 'results.json'), JSON.stringify(results, null, 1));

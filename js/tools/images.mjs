#!/usr/bin/env node
// Image conversions of the JS runtime on PNG files: node tools/images.mjs IN.json OUT.json
// IN.json: { "cases": [ { "id", "png", "width", "height" } ] } -> OUT.json: { id: { "resized": [RGB bytes],
// "chw": [...] (to_chw of the resized image), "mask": [...] (mask_to_array of the original) } }
import { readFileSync, writeFileSync } from 'node:fs';
import { decodePng, maskToTensor, resizeBicubic, toChw, toRgb } from '../src/images.js';

const [inPath, outPath] = process.argv.slice(2);
const { cases } = JSON.parse(readFileSync(inPath, 'utf8'));
const out = {};
for (const c of cases) {
  const im = await decodePng(new Uint8Array(readFileSync(c.png)));
  const resized = resizeBicubic(toRgb(im), c.width, c.height);
  out[c.id] = { resized: Array.from(resized.data), chw: Array.from(toChw(toRgb(resized)).data), mask: Array.from(maskToTensor(im).data) };
}
writeFileSync(outPath, JSON.stringify(out));

#!/usr/bin/env node
// Writes the first N float64 normals of each seed's source: node tools/noise.mjs OUT_DIR N SEED...
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NoiseSource } from '../src/noise.js';

const [outDir, n, ...seeds] = process.argv.slice(2);
for (const seed of seeds) {
  const s = new NoiseSource(Number(seed));
  const out = new Float64Array(Number(n));
  for (let i = 0; i < out.length; i++) out[i] = s.nextGauss();
  writeFileSync(join(outDir, `${seed}.f64`), new Uint8Array(out.buffer));
}

#!/usr/bin/env node
// Runs every scheduler step for step on given model outputs: node tools/scheduler_steps.mjs IN.json OUT.json
// IN.json: { "cases": [ { "id", "scheduler", "config" (diffusers dict), "steps", "seed", "x": [...],
//            "outputs": [[...] per step], "strength", "init": [...] | null } ] }
// OUT.json: { id: { "timesteps", "init_noise_sigma", "start", "latents": [[...] after each step] } }
import { readFileSync, writeFileSync } from 'node:fs';
import { noiseSource } from '../src/noise.js';
import { configFromDiffusers, makeScheduler, startLatents } from '../src/schedulers.js';

const [inPath, outPath] = process.argv.slice(2);
const { cases } = JSON.parse(readFileSync(inPath, 'utf8'));
const out = {};
for (const c of cases) {
  try {
    const sched = makeScheduler(c.scheduler, configFromDiffusers(c.config), c.steps);
    const source = noiseSource(c.seed);
    let [x, start] = startLatents(sched, Float32Array.from(c.x), c.init ? Float32Array.from(c.init) : null, c.strength);
    const latents = [Array.from(x)];
    const inputs = [];
    for (let i = start; i < sched.timesteps.length; i++) {
      inputs.push(Array.from(sched.scaleModelInput(x, i)));
      x = sched.step(Float32Array.from(c.outputs[i - start]), i, x, source);
      latents.push(Array.from(x));
    }
    out[c.id] = { timesteps: Array.from(sched.timesteps), init_noise_sigma: sched.initNoiseSigma, start, latents, inputs };
  } catch (e) {
    out[c.id] = { error: `${e.name}: ${e.message}` };
  }
}
writeFileSync(outPath, JSON.stringify(out));

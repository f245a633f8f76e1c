#!/usr/bin/env node
// Opens crafted packages with the Node runtime and reports what it refused and whether any ONNX Runtime
// session was created first:  node tools/try_open.mjs CASES.json OUT.json
// CASES.json: { "cases": [ { "id", "dir", "url": bool, "run": bool, "task"? } ] }: with "url" the folder is
// served from 127.0.0.1 and opened by URL (every request the runtime makes is recorded); with "run" the
// runtime also builds the UNet of "task" (default t2i), encodes a prompt and generates one t2i step (as the
// Python test does).
import { readFileSync, writeFileSync } from 'node:fs';
import * as ortNode from 'onnxruntime-node';
import { openPackage } from '../src/index.js';
import { serve } from './serve.mjs';

const [casesPath, outPath] = process.argv.slice(2);
const { cases } = JSON.parse(readFileSync(casesPath, 'utf8'));
let sessions = 0;
const ort = {
  ...ortNode,
  InferenceSession: { create: async (/** @type {any[]} */ ...a) => { sessions++; return ortNode.InferenceSession.create(...a); } },
};
const out = {};
for (const c of cases) {
  sessions = 0;
  let server = null;
  let location = c.dir;
  if (c.url) {
    server = await serve({ '/pkg/': c.dir }, {}, { log: true });
    location = `${server.url}/pkg/`;
  }
  const errors = [];
  const attempt = async (/** @type {() => Promise<any>} */ fn) => {
    try {
      await fn();
      errors.push(null);
    } catch (e) {
      errors.push({ name: e.name, message: e.message, hint: e.hint ?? null });
    }
  };
  await attempt(async () => {
    const p = await openPackage(location, { ort, platform: 'node' });
    try {
      if (c.run) {
        await p.unet(c.task ?? 't2i');
        await p.encodeText(['a red circle']);
      }
    } finally {
      await p.close();
    }
  });
  if (c.run) {
    await attempt(async () => {
      const p = await openPackage(location, { ort, platform: 'node' });
      try {
        await p.generate('t2i', { prompt: 'a red circle', steps: 1 });
        if (c.task && c.task !== 't2i') await p.unet(c.task);
      } finally {
        await p.close();
      }
    });
  }
  out[c.id] = { errors, sessions, requests: server ? server.requests : null };
  if (server) await server.close();
}
writeFileSync(outPath, JSON.stringify(out, null, 1));

#!/usr/bin/env node
// What the JS runtime's graph admission measured for every graph a package runs (no session is created):
//   node tools/admitted.mjs PACKAGE_DIR OUT.json
// OUT.json: { "<graph path>": { "nodes", "largestValue", "totalElements" } } for each task's ONNX graph,
// the text encoder and the codec graphs (compared with the Python runtime's `Admitted` by tests/js).
import { writeFileSync } from 'node:fs';
import { PackageReader } from '../src/index.js';

const [dir, outPath] = process.argv.slice(2);
const reader = await PackageReader.open(dir, { verify: false });
const m = reader.manifest;
for (const g of m.graphs) if (g.format === 'onnx') await reader.graphFiles(g);
if (m.text_encoder) await reader.componentFiles('text_encoder', m.text_encoder.graph);
for (const rec of Object.values(m.codec.graphs ?? {})) await reader.componentFiles('codec', rec);
writeFileSync(outPath, JSON.stringify(Object.fromEntries(reader.admitted), null, 1));

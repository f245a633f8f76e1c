#!/usr/bin/env node
// Tokenizes prompts with the JS runtime's tokenizer: node tools/tokenize.mjs IN.json OUT.json
// IN.json: { "prompts": [...], "tokenizers": [ { "id", "files": { name: path }, "max_length", "pad_id" } ] }
// OUT.json: { id: { "kind", "ids": [[...]], "untruncated": [[n, [unknown...]]] } }
import { readFileSync, writeFileSync } from 'node:fs';
import { tokenizerFromFiles } from '../src/tokenizers.js';

const [inPath, outPath] = process.argv.slice(2);
const spec = JSON.parse(readFileSync(inPath, 'utf8'));
const out = {};
for (const t of spec.tokenizers) {
  const files = Object.fromEntries(Object.entries(t.files).map(([name, p]) => [name, new Uint8Array(readFileSync(/** @type {string} */ (p)))]));
  const tok = tokenizerFromFiles(files, t.max_length ?? null, t.pad_id ?? null, t.id);
  out[t.id] = {
    kind: tok.kind, max_length: tok.maxLength, pad_id: tok.padId,
    ids: spec.prompts.map((/** @type {string} */ p) => tok.ids(p)),
    untruncated: spec.prompts.map((/** @type {string} */ p) => tok.untruncated(p)),
  };
}
writeFileSync(outPath, JSON.stringify(out));

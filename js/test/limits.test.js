// js/package_schema.json is runtime/package_schema.json byte for byte (one file of bounds, operator sets and
// tokenizer kinds for every language; `npm run build` copies it).
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { bound, operators, tokenizerKinds } from '../src/limits.js';

const source = new URL('../../runtime/package_schema.json', import.meta.url);
const copy = new URL('../package_schema.json', import.meta.url);

test('the schema copy is identical to runtime/package_schema.json', { skip: !existsSync(source) && 'outside the repository' }, () => {
  assert.ok(readFileSync(copy).equals(readFileSync(source)), 'js/package_schema.json differs: run `npm run build` in js/');
});

test('the limits are read from the copy', () => {
  const doc = JSON.parse(readFileSync(copy, 'utf8'));
  assert.equal(bound('image_side'), doc.bounds.image_side);
  assert.equal(bound('bytes.graph'), doc.bounds.bytes.graph);
  assert.deepEqual([...operators('unet')['']].sort(), [...doc.operators.unet['']].sort());
  assert.deepEqual(tokenizerKinds().models, doc.tokenizer.models);
});

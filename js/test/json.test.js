// JSON as the Python runtime reads a package's JSON: NaN/Infinity and bad UTF-8 refused with Python's words,
// a float literal kept apart from an integer while the manifest is checked.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PackageError, repr } from '../src/errors.js';
import { parseJson, parseJsonChecked } from '../src/json.js';

test('NaN, Infinity, bad UTF-8 and garbage are one PackageError', () => {
  for (const [text, words] of [['{"a": NaN}', 'NaN is not allowed'], ['[Infinity]', 'Infinity is not allowed'],
    ['{nope', 'Expecting property name enclosed in double quotes'], ['[1,]', 'Expecting value'], ['{} x', 'Extra data']]) {
    assert.throws(() => parseJson(text, 'manifest.json'), (e) => e instanceof PackageError && e.message.includes('manifest.json is not valid JSON') && e.message.includes(words), text);
  }
  assert.throws(() => parseJson(new Uint8Array([0x7b, 0xff, 0x7d]), 'x.json'), PackageError);
  assert.throws(() => parseJson('['.repeat(10000), 'x.json'), PackageError);
});

test('floats stay floats while checked; plain numbers after', () => {
  const doc = parseJsonChecked('{"steps": 20.0, "n": 3, "s": "\\u00e9\\n"}', 'x');
  assert.ok(doc.steps instanceof Number && typeof doc.n === 'number' && doc.s === 'é\n');
  assert.equal(repr(doc.steps), '20.0');
  assert.deepEqual(parseJson('{"a": [1.5, 2e3, -0, 7]}', 'x'), { a: [1.5, 2000, -0, 7] });
  assert.equal(parseJson('{"__proto__": 1}', 'x').__proto__, 1);
});

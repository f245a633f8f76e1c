// The noise source equals NumPy's legacy RandomState on the shared fixture the Python tests write
// (tests/runtime/data/noise_fixture.json): MT19937 state and words, 53-bit doubles, polar normals, float32 arrays.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { NoiseSource, noiseSource, normal, checkSeed } from '../src/noise.js';
import { ConfigError } from '../src/errors.js';

const FIXTURE = JSON.parse(readFileSync(new URL('../../tests/runtime/data/noise_fixture.json', import.meta.url), 'utf8'));

test('every stage of the definition equals NumPy for every fixture seed', () => {
  assert.ok(FIXTURE.seeds.length >= 5);
  for (const s of FIXTURE.seeds) {
    const state = new NoiseSource(s.seed);
    assert.deepEqual(Array.from(state.mt.slice(0, 4)), s.state_first, `seed ${s.seed}`);
    assert.equal(state.mt[623], s.state_last);
    const words = new NoiseSource(s.seed);
    assert.deepEqual(Array.from({ length: 8 }, () => words.nextUint32()), s.uint32);
    const doubles = new NoiseSource(s.seed);
    assert.deepEqual(Array.from({ length: 4 }, () => doubles.nextDouble()), s.double);
    const gauss = new NoiseSource(s.seed);
    assert.deepEqual(Array.from({ length: 8 }, () => gauss.nextGauss()), s.gauss_float64);
    const source = noiseSource(s.seed);  // one source, arrays drawn in order (the spare carried over)
    for (const a of s.arrays) {
      const n = a.shape.reduce((x, y) => x * y, 1);
      assert.deepEqual(Array.from(normal(source, n)), a.float32, `seed ${s.seed} shape ${a.shape}`);
    }
  }
});

test('seeds outside 32 bits are refused with the Python words', () => {
  for (const seed of [-1, 2 ** 32, 2 ** 40, 1.5, true, '3']) {
    assert.throws(() => checkSeed(seed, 'seed'), (e) => e instanceof ConfigError && /seed .* is not an integer in \[0, 4294967295\]/.test(e.message));
  }
});

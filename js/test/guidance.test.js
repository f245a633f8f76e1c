// Guidance scales of 1 skip the unconditional evaluations, exactly where Python's `effective_kind` does.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dualCfg, effectiveKind, guidanceBatches, textCfg } from '../src/guidance.js';

test('scales that cancel the guidance run one evaluation per step', () => {
  assert.equal(effectiveKind('text', 1, null), 'none');
  assert.equal(effectiveKind('text', 1.5, null), 'text');
  assert.equal(effectiveKind('text', 0, null), 'text');
  assert.equal(effectiveKind('image_text', 1, 1), 'none');
  assert.equal(effectiveKind('image_text', 1, 1.2), 'image_text');
  assert.equal(effectiveKind('image_text', 2, 1), 'image_text');
  assert.equal(effectiveKind('none', 7.5, 1.5), 'none');
  assert.equal(guidanceBatches(effectiveKind('image_text', 1, 1)).length, 1);
  assert.throws(() => effectiveKind('cfg', 1, 1), /guidance 'cfg' is not supported/);
});

test('the skipped arithmetic gives the fully conditioned prediction', () => {
  const u = Float32Array.from([0.3, -1.25, 2]);
  const img = Float32Array.from([0.5, 0.75, -0.125]);
  const full = Float32Array.from([-0.2, 1.5, 0.0625]);
  const worst = (a) => Math.max(...a.map((v, k) => Math.abs(v - full[k])));
  assert.ok(worst(dualCfg(u, img, full, 1, 1)) < 1e-6);
  assert.ok(worst(textCfg(img, full, 1)) < 1e-6);
});

// The JavaScript SHA-256 used for bodies Web Crypto refuses (browsers cap its one-shot digest near 2 GiB):
// equal to node:crypto on every padding edge and across its 16 MiB pieces, and what sha256Hex uses past the cap.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { WEB_CRYPTO_MAX, sha256Hex } from '../src/reader.js';
import { sha256HexJs } from '../src/sha256.js';

function bytes(n) {
  const d = new Uint8Array(n);
  for (let i = 0; i < n; i++) d[i] = (i * 2654435761) >>> 24;
  return d;
}

test('equals node:crypto at every padding edge and across pieces', () => {
  for (const n of [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 1000, (1 << 24) - 1, (1 << 24) + 77]) {
    const d = bytes(n);
    assert.equal(sha256HexJs(d), createHash('sha256').update(d).digest('hex'), `length ${n}`);
  }
});

test('sha256Hex hands bodies past the Web Crypto cap to it, and agrees below', async () => {
  assert.equal(WEB_CRYPTO_MAX, 2 ** 30);
  const d = bytes(4097);
  assert.equal(await sha256Hex(d), sha256HexJs(d));
});

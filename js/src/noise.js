/**
 * The sampling noise, defined once (mirrors `runtime/noise.py`): what a seed means, in every
 * language that runs a package.
 *
 * A seed is an integer in [0, 2**32 - 1]. One generate call makes one source ({@link noiseSource})
 * and draws from it in this order: the initial noise [B, C, h, w] first, then one draw of the
 * latent's shape per ancestral step. Each draw is {@link normal}.
 *
 * The source is NumPy's legacy `RandomState`, re-implemented exactly:
 * - MT19937 (Matsumoto & Nishimura 1998) seeded with `init_genrand(seed)`;
 * - a double in [0, 1) from two 32-bit outputs a, b: `((a >> 5) * 67108864 + (b >> 6)) / 9007199254740992`;
 * - a standard normal by the polar Box–Muller method in float64 (`legacy_gauss`): draw
 *   `x1 = 2 u1 - 1`, `x2 = 2 u2 - 1` until `0 < r2 = x1² + x2² < 1`; `f = sqrt(-2 log(r2) / r2)`;
 *   return `f x2` and keep `f x1` for the next draw (the spare survives between draws);
 * - an array is filled in C order with float64 normals, each then rounded to float32.
 *
 * `log` is computed in double-double arithmetic and rounded once (see {@link log}): JavaScript's
 * `Math.log` is within an ulp but not correctly rounded and differs from the C library's `log` that
 * NumPy calls in about 7 % of draws. The C library's is not always correctly rounded either (glibc's
 * is within 0.52 ulp), so a few float64 normals in 10,000 still differ in their last bit; after the
 * float32 cast the values are the same (tests/js/test_js_noise.py: 1,000,000 draws).
 */

import { ConfigError, repr } from './errors.js';

/** The largest seed: MT19937's `init_genrand` takes 32 bits. */
export const MAX_SEED = 2 ** 32 - 1;
const N = 624;
const M = 397;

/**
 * A seed, checked: an integer in [0, 2**32 - 1] (as `taskfold.config.check_seed`).
 * @param {unknown} seed
 * @param {string} [what]
 * @returns {number}
 */
export function checkSeed(seed, what = '--seed') {
  if (typeof seed !== 'number' || !Number.isInteger(seed) || seed < 0 || seed > MAX_SEED) {
    throw new ConfigError(`${what} ${repr(seed)} is not an integer in [0, ${MAX_SEED}] (2**32 - 1)`,
      'seeds are 32-bit unsigned integers (MT19937\'s seed)');
  }
  return seed;
}

/** NumPy's `RandomState`: MT19937 with the legacy Gaussian and its cached spare. */
export class NoiseSource {
  /** @param {number} seed */
  constructor(seed) {
    this.mt = new Uint32Array(N);
    this.index = N;
    this.hasGauss = false;
    this.gauss = 0.0;
    const mt = this.mt;
    mt[0] = seed >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      // 1812433253 * prev + i, modulo 2**32, without losing bits in a double
      mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
  }

  /** The next 32-bit output. */
  nextUint32() {
    const mt = this.mt;
    if (this.index >= N) {
      let kk = 0;
      for (; kk < N - M; kk++) {
        const y = (mt[kk] & 0x80000000) | (mt[kk + 1] & 0x7fffffff);
        mt[kk] = mt[kk + M] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      for (; kk < N - 1; kk++) {
        const y = (mt[kk] & 0x80000000) | (mt[kk + 1] & 0x7fffffff);
        mt[kk] = mt[kk + (M - N)] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      const y = (mt[N - 1] & 0x80000000) | (mt[0] & 0x7fffffff);
      mt[N - 1] = mt[M - 1] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      this.index = 0;
    }
    let y = mt[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** A double in [0, 1) with 53 random bits (`genrand_res53`). */
  nextDouble() {
    const a = this.nextUint32() >>> 5;
    const b = this.nextUint32() >>> 6;
    return (a * 67108864.0 + b) / 9007199254740992.0;
  }

  /** The next standard normal (float64), NumPy's `legacy_gauss`. */
  nextGauss() {
    if (this.hasGauss) {
      const g = this.gauss;
      this.hasGauss = false;
      this.gauss = 0.0;
      return g;
    }
    let x1, x2, r2;
    do {
      x1 = 2.0 * this.nextDouble() - 1.0;
      x2 = 2.0 * this.nextDouble() - 1.0;
      r2 = x1 * x1 + x2 * x2;
    } while (r2 >= 1.0 || r2 === 0.0);
    const f = Math.sqrt(-2.0 * log(r2) / r2);
    this.gauss = f * x1;
    this.hasGauss = true;
    return f * x2;
  }
}

// --- a correctly rounded natural logarithm ---------------------------------------------------------

/** `[hi, lo]` with hi + lo = a + b exactly. @param {number} a @param {number} b */
function twoSum(a, b) {
  const s = a + b;
  const bb = s - a;
  return /** @type {DD} */ ([s, (a - (s - bb)) + (b - bb)]);
}

const SPLIT = 134217729;  // 2**27 + 1
/** `[hi, lo]` with hi + lo = a * b exactly (Dekker). @param {number} a @param {number} b */
function twoProd(a, b) {
  const p = a * b;
  let t = SPLIT * a;
  const ah = t - (t - a);
  const al = a - ah;
  t = SPLIT * b;
  const bh = t - (t - b);
  const bl = b - bh;
  return [p, ((ah * bh - p) + ah * bl + al * bh) + al * bl];
}

/** @typedef {[number, number]} DD */
/** @param {DD} a @param {DD} b @returns {DD} */
function ddAdd(a, b) {
  const [s, e] = twoSum(a[0], b[0]);
  return quick(s, e + a[1] + b[1]);
}
/** @param {DD} a @param {DD} b @returns {DD} */
function ddMul(a, b) {
  const [p, e] = twoProd(a[0], b[0]);
  return quick(p, e + a[0] * b[1] + a[1] * b[0]);
}
/** @param {DD} a @param {DD} b @returns {DD} */
function ddDiv(a, b) {
  const q1 = a[0] / b[0];
  const r = ddAdd(a, ddMul(b, [-q1, 0]));
  const q2 = r[0] / b[0];
  const r2 = ddAdd(r, ddMul(b, [-q2, 0]));
  const q3 = r2[0] / b[0];
  return ddAdd(quick(q1, q2), [q3, 0]);
}
/** @param {number} a @param {number} b @returns {DD} */
function quick(a, b) {
  const s = a + b;
  return [s, b - (s - a)];
}

const LN2 = /** @type {DD} */ ([0.6931471805599453, 2.3190468138462996e-17]);
const SQRT2 = Math.SQRT2;
/** 1 / (2k + 1) as double-doubles, k = 0 .. 26. */
const INV_ODD = Array.from({ length: 27 }, (_, k) => ddDiv([1, 0], /** @type {DD} */ ([2 * k + 1, 0])));

/**
 * The natural logarithm of a positive finite double, correctly rounded (up to a double-double's
 * ~106 bits): `x = m 2^e` with m in [sqrt(1/2), sqrt(2)), `log m = 2 atanh(s)`, `s = (m - 1) / (m + 1)`,
 * the atanh series summed in double-double.
 * @param {number} x
 */
export function log(x) {
  if (!(x > 0) || !Number.isFinite(x)) return Math.log(x);
  let e = Math.floor(Math.log2(x));
  let m = x / 2 ** e;
  while (m >= 2) { m /= 2; e += 1; }
  while (m < 1) { m *= 2; e -= 1; }
  if (m > SQRT2) { m /= 2; e += 1; }
  const s = ddDiv([m - 1, 0], /** @type {DD} */ (twoSum(m, 1)));
  const s2 = ddMul(s, s);
  let p = INV_ODD[INV_ODD.length - 1];
  for (let k = INV_ODD.length - 2; k >= 0; k--) p = ddAdd(ddMul(p, s2), INV_ODD[k]);
  const r = ddAdd(ddMul(ddMul(s, p), [2, 0]), ddMul(LN2, [e, 0]));
  return r[0] + r[1];
}

/**
 * The seeded source of one generate call.
 * @param {number} seed
 */
export function noiseSource(seed) {
  return new NoiseSource(checkSeed(seed, 'seed'));
}

/**
 * The next standard-normal draws of `source` as float32, `count` values in C order.
 * @param {NoiseSource} source
 * @param {number} count
 * @returns {Float32Array}
 */
export function normal(source, count) {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = source.nextGauss();
  return out;
}

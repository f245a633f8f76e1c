/**
 * Images in and out of the runtime (mirrors `runtime/images.py`): RGBA / RGB pixels <-> float32
 * `[C, H, W]` in [-1, 1].
 *
 * Conventions are the training data's: RGB images are `x / 127.5 - 1`; masks are 1 where the region
 * is to be filled (grey value 128 or more, grey = Pillow's `convert("L")`), 0 elsewhere. Outputs are
 * `ImageData`-shaped RGBA (`{ width, height, data: Uint8ClampedArray }`), rounded as NumPy rounds.
 * Resampling is Pillow's bicubic resize, integer for integer (the super-resolution task's half-size
 * input, and `resize`). PNG files are decoded and encoded with `fast-png` (Node and browsers).
 */

import { ConfigError, repr } from './errors.js';
import { roundHalfEven } from './schedulers.js';

/** The largest image decoded: this many pixels a side (as the Python runtime). */
export const MAX_IMAGE_SIDE = 8192;
const f = Math.fround;

/**
 * Pixels: `channels` interleaved 8-bit values per pixel (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA).
 * @typedef {{ width: number, height: number, data: Uint8Array | Uint8ClampedArray, channels?: number }} Pixels
 * @typedef {{ width: number, height: number, data: Uint8ClampedArray }} RGBAImage
 * @typedef {import('./sampler.js').Tensor} Tensor
 */

/** @param {Pixels} im */
export function channelsOf(im) {
  if (im.channels) return im.channels;
  const c = im.data.length / (im.width * im.height);
  if (![1, 2, 3, 4].includes(c)) throw new ConfigError(`an image of ${im.width}x${im.height} pixels has ${im.data.length} values, not 1 to 4 per pixel`);
  return c;
}

/**
 * Decode PNG bytes (8- or 16-bit, grey, grey+alpha, RGB, RGBA or palette) to 8-bit pixels.
 * @param {Uint8Array} bytes
 * @param {string} what
 * @returns {Promise<Pixels>}
 */
export async function decodePng(bytes, what = 'image') {
  const { decode, convertIndexedToRgb } = await import('fast-png');
  let png;
  try {
    png = decode(bytes);
  } catch (e) {
    throw new ConfigError(`${what} is not a readable image (${/** @type {Error} */ (e).message})`, 'give a PNG file');
  }
  if (Math.max(png.width, png.height) > MAX_IMAGE_SIDE) {
    throw new ConfigError(`${what} is ${png.width}x${png.height} pixels; taskfold reads images of at most ${MAX_IMAGE_SIDE} pixels a side`, 'resize it first');
  }
  if (png.palette) {
    const rgb = convertIndexedToRgb(png);
    return { width: png.width, height: png.height, data: rgb, channels: rgb.length / (png.width * png.height) };
  }
  let data = png.data;
  if (png.depth === 16) data = Uint8Array.from(/** @type {Uint16Array} */ (data), (v) => v >> 8);
  else if (png.depth !== 8) {
    const max = (1 << png.depth) - 1;
    data = Uint8Array.from(data, (v) => Math.round((v * 255) / max));
  }
  return { width: png.width, height: png.height, data: /** @type {Uint8Array} */ (data), channels: png.channels };
}

/**
 * Encode pixels as PNG bytes (RGB when the alpha is all opaque, as the Python runtime writes).
 * @param {Pixels} im
 * @returns {Promise<Uint8Array>}
 */
export async function encodePng(im) {
  const { encode } = await import('fast-png');
  const c = channelsOf(im);
  let data = im.data;
  let channels = c;
  if (c === 4 && im.data.every((v, i) => i % 4 !== 3 || v === 255)) {
    data = new Uint8Array(im.width * im.height * 3);
    for (let p = 0; p < im.width * im.height; p++) for (let k = 0; k < 3; k++) data[p * 3 + k] = im.data[p * 4 + k];
    channels = 3;
  }
  return encode({ width: im.width, height: im.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length), channels, depth: 8 });
}

/**
 * RGB bytes of an image (Pillow's `convert("RGB")`: grey replicated, alpha dropped).
 * @param {Pixels} im
 * @returns {Pixels}
 */
export function toRgb(im) {
  const c = channelsOf(im);
  if (c === 3) return { width: im.width, height: im.height, data: im.data, channels: 3 };
  const n = im.width * im.height;
  const out = new Uint8Array(n * 3);
  for (let p = 0; p < n; p++) {
    for (let k = 0; k < 3; k++) out[p * 3 + k] = c >= 3 ? im.data[p * c + k] : im.data[p * c];
  }
  return { width: im.width, height: im.height, data: out, channels: 3 };
}

/**
 * Grey values (Pillow's `convert("L")`: ITU-R 601-2 luma in 16-bit fixed point).
 * @param {Pixels} im
 * @returns {Uint8Array}
 */
export function toGrey(im) {
  const c = channelsOf(im);
  const n = im.width * im.height;
  const out = new Uint8Array(n);
  for (let p = 0; p < n; p++) {
    if (c < 3) out[p] = im.data[p * c];
    else out[p] = (im.data[p * c] * 19595 + im.data[p * c + 1] * 38470 + im.data[p * c + 2] * 7471 + 0x8000) >> 16;
  }
  return out;
}

/**
 * RGB pixels to float32 `[1, 3, H, W]` in [-1, 1] (`to_chw`).
 * @param {Pixels} rgb
 * @returns {Tensor}
 */
export function toChw(rgb) {
  const { width: w, height: h } = rgb;
  const n = w * h;
  const data = new Float32Array(3 * n);
  for (let p = 0; p < n; p++) for (let k = 0; k < 3; k++) data[k * n + p] = f(rgb.data[p * 3 + k] / f(127.5)) - 1;
  return { data, shape: [1, 3, h, w] };
}

/**
 * A mask to float32 `[1, 1, H, W]`: 1 where the grey value is 128 or more (`mask_to_array`).
 * @param {Pixels} im
 * @returns {Tensor}
 */
export function maskToTensor(im) {
  const grey = toGrey(im);
  return { data: Float32Array.from(grey, (v) => (v >= 128 ? 1 : 0)), shape: [1, 1, im.height, im.width] };
}

/**
 * Images `[B, 3, H, W]` in [-1, 1] to RGBA (`to_uint8`: clipped, `round((x + 1) * 127.5)` half to even).
 * @param {Tensor} t
 * @returns {RGBAImage[]}
 */
export function toRgba(t) {
  const [B, C, H, W] = t.shape;
  const n = H * W;
  const out = [];
  for (let b = 0; b < B; b++) {
    const data = new Uint8ClampedArray(n * 4);
    for (let p = 0; p < n; p++) {
      for (let k = 0; k < 4; k++) {
        if (k === 3 || k >= C) {
          data[p * 4 + k] = k === 3 ? 255 : data[p * 4];
          continue;
        }
        const v = Math.min(Math.max(t.data[(b * C + k) * n + p], -1), 1);
        data[p * 4 + k] = roundHalfEven(f(f(v + 1) * f(127.5)));
      }
    }
    out.push({ width: W, height: H, data });
  }
  return out;
}

// --- Pillow's bicubic resampling, integer for integer -----------------------------------------------

const PRECISION_BITS = 32 - 8 - 2;

/** Pillow's bicubic filter (a = -0.5). @param {number} x */
function bicubic(x) {
  const a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

/**
 * Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis.
 * @param {number} inSize
 * @param {number} outSize
 */
function coeffs(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = 2.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      k[x] = bicubic((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    for (let x = 0; x < ksize; x++) {
      const v = x < xmax ? (ww !== 0.0 ? k[x] / ww : k[x]) : 0;
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { bounds, kk, ksize };
}

/** @param {number} ss */
function clip8(ss) {
  if (ss >= 2 ** (PRECISION_BITS + 8)) return 255;
  if (ss <= 0) return 0;
  return Math.floor(ss / 2 ** PRECISION_BITS);
}

/**
 * Pillow's `Image.resize((w, h), BICUBIC)` of RGB pixels: a horizontal pass into 8-bit rows, then a
 * vertical pass, each with fixed-point coefficients.
 * @param {Pixels} rgb
 * @param {number} width
 * @param {number} height
 * @returns {Pixels}
 */
export function resizeBicubic(rgb, width, height) {
  const C = 3;
  if (rgb.width === width && rgb.height === height) return rgb;
  let src = rgb.data;
  let sw = rgb.width;
  let sh = rgb.height;
  const v = coeffs(sh, height);
  const yFirst = v.bounds[0];
  const yLast = v.bounds[height * 2 - 2] + v.bounds[height * 2 - 1];
  if (width !== sw) {
    const h = coeffs(sw, width);
    const rowsN = yLast - yFirst;
    const tmp = new Uint8Array(width * rowsN * C);
    for (let yy = 0; yy < rowsN; yy++) {
      for (let xx = 0; xx < width; xx++) {
        const xmin = h.bounds[xx * 2];
        const xmax = h.bounds[xx * 2 + 1];
        for (let c = 0; c < C; c++) {
          let ss = 1 << (PRECISION_BITS - 1);
          for (let x = 0; x < xmax; x++) ss += src[((yy + yFirst) * sw + x + xmin) * C + c] * h.kk[xx * h.ksize + x];
          tmp[(yy * width + xx) * C + c] = clip8(ss);
        }
      }
    }
    for (let i = 0; i < height; i++) v.bounds[i * 2] -= yFirst;
    src = tmp;
    sw = width;
    sh = rowsN;
  }
  if (height === rgb.height && width !== rgb.width) return { width, height, data: src, channels: 3 };
  const out = new Uint8Array(width * height * C);
  for (let yy = 0; yy < height; yy++) {
    const ymin = v.bounds[yy * 2];
    const ymax = v.bounds[yy * 2 + 1];
    for (let xx = 0; xx < width; xx++) {
      for (let c = 0; c < C; c++) {
        let ss = 1 << (PRECISION_BITS - 1);
        for (let y = 0; y < ymax; y++) ss += src[((y + ymin) * sw + xx) * C + c] * v.kk[yy * v.ksize + y];
        out[(yy * width + xx) * C + c] = clip8(ss);
      }
    }
  }
  return { width, height, data: out, channels: 3 };
}

/**
 * `im` at `width x height`, or a one-line error (`fit_image`): `also` is a second accepted size that
 * is upsampled bicubically without asking (super-resolution's half-size input); other sizes are
 * refused unless `resize`.
 * @param {Pixels} im RGB pixels
 * @param {[number, number]} size `[width, height]`
 * @param {string} what
 * @param {{ also?: [number, number] | null, resize?: boolean }} [options]
 */
export function fitImage(im, [w, h], what, { also = null, resize = false } = {}) {
  if (im.width === w && im.height === h) return im;
  if ((also && im.width === also[0] && im.height === also[1]) || resize) return resizeBicubic(toRgb(im), w, h);
  const accepted = `${w}x${h}${also ? ` or ${also[0]}x${also[1]}` : ''}`;
  throw new ConfigError(`${what} is ${im.width}x${im.height} pixels; the package expects ${accepted}`,
    'resize it, or pass --resize to let the runtime resample it (bicubic)');
}

/**
 * A mask at the image size: nearest is not what Pillow does for `fit_image(mask)`; masks of another
 * size are resampled bicubically on their grey values when `resize`, else refused.
 * @param {Pixels} im
 * @param {[number, number]} size
 * @param {boolean} resize
 */
export function fitMask(im, [w, h], resize) {
  if (im.width === w && im.height === h) return im;
  if (!resize) {
    throw new ConfigError(`mask is ${im.width}x${im.height} pixels; the package expects ${w}x${h}`,
      'resize it, or pass --resize to let the runtime resample it (bicubic)');
  }
  return resizeBicubic(toRgb(im), w, h);
}

export { repr };

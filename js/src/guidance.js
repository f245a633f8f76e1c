/**
 * Classifier-free guidance (mirrors `runtime/guidance.py`): how several UNet outputs become one
 * noise prediction. Arithmetic in float32, in Python's order.
 *
 * - `none`: one evaluation with every condition, used as is.
 * - `text`: `e = e(z, c_img, empty) + s * (e(z, c_img, c_txt) - e(z, c_img, empty))` (Ho & Salimans 2022, Eq. 6).
 * - `image_text`: InstructPix2Pix (Brooks et al. 2023, Eq. 3):
 *   `e = e(z, 0, empty) + s_I (e(z, c_img, empty) - e(z, 0, empty)) + s_T (e(z, c_img, c_txt) - e(z, c_img, empty))`.
 */

import { ConfigError, repr } from './errors.js';
import { GUIDANCE_KINDS } from './tasks.js';

/** @typedef {{ text: boolean, image: boolean }} Conditioning */

export const UNCOND = Object.freeze({ text: false, image: false });
export const IMAGE_ONLY = Object.freeze({ text: false, image: true });
export const FULL = Object.freeze({ text: true, image: true });
const BATCHES = /** @type {Record<string, Conditioning[]>} */ ({
  none: [FULL],
  text: [IMAGE_ONLY, FULL],
  image_text: [UNCOND, IMAGE_ONLY, FULL],
});
const f = Math.fround;

/** @param {string} kind */
function checkKind(kind) {
  if (!Object.hasOwn(BATCHES, kind)) throw new ConfigError(`guidance ${repr(kind)} is not supported; expected one of: ${GUIDANCE_KINDS.join(', ')}`);
}

/**
 * The UNet evaluations one step of `kind` needs, in {@link combine}'s order.
 * @param {string} kind
 * @returns {Conditioning[]}
 */
export function guidanceBatches(kind) {
  checkKind(kind);
  return BATCHES[kind];
}

/**
 * The guidance a step runs: `none` where the scales make `kind`'s combination equal the fully conditioned
 * prediction (`text` at scale 1; `image_text` at text and image scale 1), so its unconditional evaluations
 * are skipped; else `kind` itself. Null scales count as 1 (mirrors `effective_kind`).
 * @param {string} kind
 * @param {number | null | undefined} textScale
 * @param {number | null | undefined} imageScale
 */
export function effectiveKind(kind, textScale, imageScale) {
  checkKind(kind);
  const text = textScale ?? 1;
  const image = imageScale ?? 1;
  if ((kind === 'text' && text === 1) || (kind === 'image_text' && text === 1 && image === 1)) return 'none';
  return kind;
}

/**
 * `e_uncond + scale * (e_text - e_uncond)`.
 * @param {Float32Array} uncond
 * @param {Float32Array} text
 * @param {number} scale
 */
export function textCfg(uncond, text, scale) {
  const s = f(scale);
  return uncond.map((u, k) => u + f(s * f(text[k] - u)));
}

/**
 * `e_uncond + image_scale * (e_image - e_uncond) + text_scale * (e_full - e_image)`.
 * @param {Float32Array} uncond
 * @param {Float32Array} image
 * @param {Float32Array} full
 * @param {number} textScale
 * @param {number} imageScale
 */
export function dualCfg(uncond, image, full, textScale, imageScale) {
  const st = f(textScale);
  const si = f(imageScale);
  return uncond.map((u, k) => f(u + f(si * f(image[k] - u))) + f(st * f(full[k] - image[k])));
}

/**
 * Apply guidance `kind` to the UNet outputs of `guidanceBatches(kind)`, one array per evaluation.
 * @param {string} kind
 * @param {Float32Array[]} outputs
 * @param {{ textScale?: number, imageScale?: number }} [scales]
 */
export function combine(kind, outputs, { textScale = 7.5, imageScale = 1.5 } = {}) {
  const n = guidanceBatches(kind).length;
  if (outputs.length !== n) throw new ConfigError(`guidance ${repr(kind)} needs ${n} UNet outputs, got ${outputs.length}`);
  if (kind === 'none') return outputs[0];
  if (kind === 'text') return textCfg(outputs[0], outputs[1], textScale);
  return dualCfg(outputs[0], outputs[1], outputs[2], textScale, imageScale);
}

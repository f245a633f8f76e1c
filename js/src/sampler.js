/**
 * The sampling loop (mirrors `runtime/sampler.py` step for step): schedulers, guidance, img2img
 * strength and the UNet input of every task.
 *
 * The package hands {@link sample} a {@link Model} (async callables on float32 tensors). Per step the
 * task's guidance lists the UNet evaluations it needs; the UNet input is
 * `concat[scaled noisy latents, condition parts]` in the task's layout; a dropped image condition
 * is zeros, a dropped prompt the empty prompt. Noise is one {@link noiseSource} per call, drawn for
 * the initial noise and then for every ancestral step, so a seed gives the Python runtime's image.
 */

import { ConfigError, repr } from './errors.js';
import { combine, effectiveKind, guidanceBatches } from './guidance.js';
import { checkSeed, noiseSource, normal } from './noise.js';
import { SCHEDULERS, checkStrength, configFromDiffusers, makeScheduler, startLatents } from './schedulers.js';
import { needsCondition, needsMask } from './tasks.js';

/**
 * A float32 tensor: data in C order and its shape.
 * @typedef {{ data: Float32Array, shape: number[] }} Tensor
 * @typedef {import('./tasks.js').TaskSpec} TaskSpec
 */

/**
 * What the loop calls. `unet(sample, timestep, states) -> noise`; `encodeText(prompts) -> [B, L, D]`;
 * `encodeImages(images in [-1, 1]) -> UNet sample space`; `decode(latents) -> images in [-1, 1]`.
 * @typedef {{ unet: (x: Tensor, t: Tensor, h: Tensor) => Promise<Tensor>, encodeText: (p: string[]) => Promise<Tensor>,
 *   encodeImages: (x: Tensor) => Promise<Tensor>, decode: (x: Tensor) => Promise<Tensor>, maxBatch: number | null,
 *   scalingFactor: number, shiftFactor: number }} Model
 */

const f = Math.fround;

/**
 * Concatenate tensors along axis `axis` (all other dims equal).
 * @param {Tensor[]} parts
 * @param {number} axis
 * @returns {Tensor}
 */
export function concat(parts, axis) {
  const shape = [...parts[0].shape];
  shape[axis] = parts.reduce((n, p) => n + p.shape[axis], 0);
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  let pos = 0;
  for (let o = 0; o < outer; o++) {
    for (const p of parts) {
      const inner = p.data.length / outer;
      data.set(p.data.subarray(o * inner, (o + 1) * inner), pos);
      pos += inner;
    }
  }
  return { data, shape };
}

/**
 * Rows `[start, end)` of a tensor (axis 0).
 * @param {Tensor} t
 * @param {number} start
 * @param {number} end
 * @returns {Tensor}
 */
export function rows(t, start, end) {
  const row = t.data.length / t.shape[0];
  return { data: t.data.slice(start * row, end * row), shape: [end - start, ...t.shape.slice(1)] };
}

/**
 * Nearest-neighbour resize `[B, 1, H, W] -> [B, 1, h, w]` (source index floor(i * H / h)).
 * @param {Tensor} mask
 * @param {[number, number]} size
 * @returns {Tensor}
 */
export function nearest(mask, [h, w]) {
  const [B, C, H, W] = mask.shape;
  if (H === h && W === w) return mask;
  const data = new Float32Array(B * C * h * w);
  const rowIdx = Array.from({ length: h }, (_, i) => Math.min(Math.trunc(i * (H / h)), H - 1));
  const colIdx = Array.from({ length: w }, (_, j) => Math.min(Math.trunc(j * (W / w)), W - 1));
  for (let bc = 0; bc < B * C; bc++) {
    for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) data[bc * h * w + i * w + j] = mask.data[bc * H * W + rowIdx[i] * W + colIdx[j]];
  }
  return { data, shape: [B, C, h, w] };
}

/**
 * The task's condition channels (everything after the noisy latents), `[B, C - c, h, w]`, or null.
 * @param {TaskSpec} spec
 * @param {(x: Tensor) => Promise<Tensor>} encodeImages
 * @param {Tensor | null} condition `[B, 3, H, W]` in [-1, 1]
 * @param {Tensor | null} mask `[B, 1, H, W]`, 1 = fill
 * @param {[number, number]} latentHw
 * @param {number} scalingFactor
 * @param {number} shiftFactor
 */
export async function conditionParts(spec, encodeImages, condition, mask, latentHw, scalingFactor = 1.0, shiftFactor = 0.0) {
  /** @type {Tensor[]} */
  const parts = [];
  for (const part of spec.inputs.slice(1)) {
    if (part === 'mask') {
      parts.push(nearest(/** @type {Tensor} */ (mask), latentHw));
      continue;
    }
    const cond = /** @type {Tensor} */ (condition);
    let img = cond;
    if (part === 'masked_image') {
      const m = /** @type {Tensor} */ (mask);
      const [B, C, H, W] = cond.shape;
      const data = new Float32Array(cond.data.length);
      for (let b = 0; b < B; b++) {
        for (let c = 0; c < C; c++) {
          for (let p = 0; p < H * W; p++) data[(b * C + c) * H * W + p] = cond.data[(b * C + c) * H * W + p] * f(1 - m.data[b * H * W + p]);
        }
      }
      img = { data, shape: cond.shape };
    }
    let latents = await encodeImages(img);
    if (spec.image_latents === 'unscaled') {
      const s = f(scalingFactor);
      const sh = f(shiftFactor);
      latents = { data: latents.data.map((v) => f(v / s) + sh), shape: latents.shape };
    }
    parts.push(latents);
  }
  return parts.length ? concat(parts, 1) : null;
}

/**
 * Refuse a missing or unexpected condition image or mask, and a strength the task cannot use.
 * @param {TaskSpec} spec
 * @param {unknown} condition
 * @param {unknown} mask
 * @param {any} strength
 */
export function checkInputs(spec, condition, mask, strength) {
  const none = (/** @type {unknown} */ v) => v === null || v === undefined;
  if (needsMask(spec) && none(mask)) throw new ConfigError(`task ${repr(spec.name)} needs a mask (white = region to fill)`, 'pass --mask MASK.png');
  if (needsCondition(spec) && none(condition)) throw new ConfigError(`task ${repr(spec.name)} needs a condition image`, 'pass --image IMAGE.png');
  if (!needsCondition(spec) && !none(condition)) throw new ConfigError(`task ${repr(spec.name)} takes no condition image (its input is ${repr(spec.inputs)})`);
  if (!needsMask(spec) && !none(mask)) throw new ConfigError(`task ${repr(spec.name)} takes no mask (its input is ${repr(spec.inputs)})`);
  strength = checkStrength(strength);
  if (strength < 1 && !needsCondition(spec)) {
    throw new ConfigError(`strength ${strength} needs a condition image to start from; task ${repr(spec.name)} takes none`,
      'strength applies to image-conditioned tasks (edit, sr, inpaint)');
  }
  return strength;
}

/**
 * The prompts as a list; every option checked, each refusal naming its value.
 * @param {string | string[]} prompts
 * @param {any} steps
 * @param {string} scheduler
 * @param {any} seed
 * @param {any} guidanceScale
 * @param {any} imageGuidanceScale
 */
export function checkOptions(prompts, steps, scheduler, seed, guidanceScale, imageGuidanceScale) {
  const list = typeof prompts === 'string' ? [prompts] : Array.isArray(prompts) ? [...prompts] : null;
  if (!list || !list.length || !list.every((p) => typeof p === 'string')) {
    throw new ConfigError(`prompt must be a string or a non-empty list of strings, got ${repr(prompts)}`);
  }
  if (!SCHEDULERS.includes(scheduler)) throw new ConfigError(`scheduler ${repr(scheduler)} is not one of ${SCHEDULERS.join(', ')}`);
  if (!Number.isInteger(steps) || steps < 1) throw new ConfigError(`steps must be a positive integer, got ${repr(steps)}`);
  checkSeed(seed, 'seed');
  checkFinite(guidanceScale, 'guidance scale');
  checkFinite(imageGuidanceScale, 'image guidance scale');
  return list;
}

/**
 * `value` (or null/undefined) if it is a finite number.
 * @param {any} value
 * @param {string} what
 */
export function checkFinite(value, what) {
  if (value !== null && value !== undefined && !(typeof value === 'number' && Number.isFinite(value))) {
    throw new ConfigError(`${what} must be a finite number, got ${repr(value)}`);
  }
  return value;
}

/**
 * The negative prompts, one per row, or null when there are none (or all are empty: plain sampling).
 * Refused for a task that runs no unconditional text evaluation (guidance `none`, or no text).
 * @param {import('./tasks.js').TaskSpec} spec
 * @param {string | string[] | null | undefined} negativePrompts
 * @param {number} rows
 * @returns {string[] | null}
 */
export function checkNegative(spec, negativePrompts, rows) {
  if (negativePrompts === null || negativePrompts === undefined) return null;
  let negative = typeof negativePrompts === 'string' ? [negativePrompts] : Array.isArray(negativePrompts) ? [...negativePrompts] : null;
  if (!negative || !negative.every((p) => typeof p === 'string')) {
    throw new ConfigError(`negative prompt must be a string or a list of strings, got ${repr(negativePrompts)}`);
  }
  if (!negative.some((p) => p)) return null;
  if (spec.guidance === 'none' || !spec.uses_text) {
    throw new ConfigError(`task ${repr(spec.name)} uses no classifier-free guidance on text (guidance ${repr(spec.guidance)}); a negative prompt has nothing to replace`,
      'drop the negative prompt');
  }
  if (negative.length === 1) negative = Array(rows).fill(negative[0]);
  if (negative.length !== rows) throw new ConfigError(`${negative.length} negative prompts for ${rows} prompts; give one, or one per prompt`);
  return negative;
}

/**
 * What a step callback returned: nothing (go on with `x`) or replacement latents of `x`'s size.
 * @param {any} returned
 * @param {Float32Array} x
 */
function fromCallback(returned, x) {
  if (returned === null || returned === undefined) return x;
  const data = returned instanceof Float32Array ? returned : returned?.data instanceof Float32Array ? returned.data : null;
  if (data === null || data.length !== x.length) {
    throw new ConfigError(`the step callback returned ${data ? `${data.length} values` : repr(typeof returned)}; the latents are ${x.length} values (return nothing to keep them)`);
  }
  return data;
}

/**
 * `onStep` (diffusers' `callback_on_step_end`) sees, after each step that runs, its index among the steps
 * that run (from 0), their number, its timestep and the latents it produced; it returns nothing to go on,
 * or latents of the same size to go on from instead.
 * @typedef {(info: { step: number, steps: number, timestep: number, latents: Tensor }) => (Float32Array | Tensor | null | undefined | void)} StepCallback
 * @typedef {{ schedulerConfig: Record<string, any>, latentShape: [number, number, number], condition?: Tensor | null,
 *   mask?: Tensor | null, steps?: number | null, scheduler?: string, guidanceScale?: number | null,
 *   imageGuidanceScale?: number | null, seed?: number, strength?: number | null, negativePrompts?: string | string[] | null,
 *   onStep?: StepCallback | null }} SampleOptions
 */

/**
 * Images `[B, 3, H, W]` in [-1, 1] for `prompts` (and their conditions) of task `spec`.
 * @param {Model} model
 * @param {TaskSpec} spec
 * @param {string[]} prompts
 * @param {SampleOptions} options
 * @returns {Promise<Tensor>}
 */
export async function sample(model, spec, prompts, options) {
  const { schedulerConfig, latentShape, condition = null, mask = null, scheduler = 'ddim', seed = 0, onStep = null } = options;
  const steps = options.steps ?? spec.steps;
  let strength = options.strength ?? spec.strength;
  prompts = checkOptions(prompts, steps, scheduler, seed, options.guidanceScale, options.imageGuidanceScale);
  strength = checkInputs(spec, condition, mask, strength);
  const b = prompts.length;
  const [c, h, w] = latentShape;
  const sText = options.guidanceScale ?? spec.guidance_scale;
  const sImg = options.imageGuidanceScale ?? spec.image_guidance_scale;
  const sched = makeScheduler(scheduler, configFromDiffusers(schedulerConfig), steps);
  const imageParts = await conditionParts(spec, model.encodeImages, condition, mask, [h, w], model.scalingFactor, model.shiftFactor);
  const negative = checkNegative(spec, options.negativePrompts, b);
  const text = await model.encodeText(spec.uses_text ? prompts : prompts.map(() => ''));
  const kind = effectiveKind(spec.guidance, sText, sImg); // scales of 1: one evaluation per step, not 2 or 3
  const empty = kind === 'none' ? null : await model.encodeText(negative ?? prompts.map(() => '')); // unconditional evaluations only
  const source = noiseSource(seed);
  const noise = normal(source, b * c * h * w);
  const init = strength < 1 ? (await model.encodeImages(/** @type {Tensor} */ (condition))).data : null;
  let [x, start] = startLatents(sched, noise, init, strength);
  const shape = [b, c, h, w];
  const batches = guidanceBatches(kind);
  for (let i = start; i < sched.timesteps.length; i++) {
    const xin = { data: sched.scaleModelInput(x, i), shape };
    const ts = { data: new Float32Array(b).fill(sched.timesteps[i]), shape: [b] };
    const evals = batches.map((cond) => /** @type {[Tensor, Tensor]} */ ([
      imageParts === null ? xin : concat([xin, cond.image ? imageParts : { data: new Float32Array(imageParts.data.length), shape: imageParts.shape }], 1),
      cond.text ? text : /** @type {Tensor} */ (empty),
    ]));
    /** @type {Float32Array[]} */
    let outs;
    if (evals.length > 1 && (model.maxBatch === null || model.maxBatch >= b * evals.length)) {
      const out = await model.unet(concat(evals.map((e) => e[0]), 0), concat(evals.map(() => ts), 0), concat(evals.map((e) => e[1]), 0));
      const n = out.data.length / evals.length;
      outs = evals.map((_, k) => out.data.subarray(k * n, (k + 1) * n));
    } else {
      outs = [];
      for (const [xIn, states] of evals) outs.push((await model.unet(xIn, ts, states)).data);
    }
    const eps = combine(kind, outs, { textScale: sText, imageScale: sImg ?? 1.0 });
    x = sched.step(eps, i, x, source);
    if (onStep) x = fromCallback(onStep({ step: i - start, steps: sched.timesteps.length - start, timestep: sched.timesteps[i], latents: { data: x, shape } }), x);
  }
  return model.decode({ data: x, shape });
}

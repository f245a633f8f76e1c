/**
 * Tasks (mirrors `taskfold/tasks.py`): what a task feeds the UNet, whether it reads text, how it
 * is guided, and its recommended sampling — read from a package's manifest entry.
 */

import { TaskError, ConfigError, repr, fmtG } from './errors.js';

/** Parts a task input can be built from (`mask` is one channel, every other part the latent channels). */
export const INPUT_PARTS = ['noisy', 'image', 'mask', 'masked_image'];
/** `none`: one evaluation; `text`: CFG on the prompt; `image_text`: InstructPix2Pix dual guidance. */
export const GUIDANCE_KINDS = ['none', 'text', 'image_text'];
export const IMAGE_LATENTS = ['scaled', 'unscaled'];
const LEGACY_FIELDS = { image_latents: 'scaled' };
const NAME_RE = /^[a-z][a-z0-9_-]{0,31}$/;

/**
 * @typedef {object} TaskSpec
 * @property {string} name
 * @property {string[]} inputs
 * @property {boolean} uses_text
 * @property {string} guidance
 * @property {number} guidance_scale
 * @property {number | null} image_guidance_scale
 * @property {number} condition_scale
 * @property {string} image_latents
 * @property {number} strength
 * @property {number} steps
 */

/** @type {Record<string, [string, (v: any) => boolean, (v: any) => any]>} field -> (description, test, convert) */
const FIELDS = {
  name: ['a string', (v) => typeof v === 'string', (v) => v],
  inputs: ['a list of a string', (v) => Array.isArray(v) && v.every((x) => typeof x === 'string'), (v) => [...v]],
  uses_text: ['true or false', (v) => typeof v === 'boolean', (v) => v],
  guidance: ['a string', (v) => typeof v === 'string', (v) => v],
  guidance_scale: ['a finite number', isFiniteNumber, Number],
  image_guidance_scale: ['a finite number or null', (v) => v === null || isFiniteNumber(v), (v) => (v === null ? null : Number(v))],
  condition_scale: ['an integer', isInt, (v) => v],
  image_latents: ['a string', (v) => typeof v === 'string', (v) => v],
  strength: ['a finite number', isFiniteNumber, Number],
  steps: ['an integer', isInt, (v) => v],
};
const DEFAULTS = {
  inputs: ['noisy'], uses_text: true, guidance: 'text', guidance_scale: 7.5, image_guidance_scale: null,
  condition_scale: 1, image_latents: 'scaled', strength: 1.0, steps: 20,
};

/** @param {any} v */
export function isFiniteNumber(v) {
  return (typeof v === 'number' || v instanceof Number) && Number.isFinite(Number(v));
}

/** @param {any} v */
export function isInt(v) {
  return typeof v === 'number' && Number.isInteger(v);
}

/** @param {any} v Python's `_show`: the type name and the repr */
function show(v) {
  const type = v === null ? 'NoneType' : typeof v === 'string' ? 'str' : typeof v === 'boolean' ? 'bool'
    : v instanceof Number ? 'float' : typeof v === 'number' ? (Number.isInteger(v) ? 'int' : 'float')
      : Array.isArray(v) ? 'list' : 'dict';
  return `${type} ${repr(v).slice(0, 60)}`;
}

/** @param {TaskSpec} spec */
export const needsCondition = (spec) => spec.inputs.some((p) => p === 'image' || p === 'masked_image');
/** @param {TaskSpec} spec */
export const needsMask = (spec) => spec.inputs.some((p) => p === 'mask' || p === 'masked_image');

/**
 * A task spec from a dict, every field typed and the whole definition checked (`TaskSpec.from_dict`).
 * @param {Record<string, any>} d
 * @param {string} [where]
 * @returns {TaskSpec}
 */
export function taskFromDict(d, where) {
  if (d === null || typeof d !== 'object' || Array.isArray(d)) throw new ConfigError(`${where ?? 'task declaration'} must be a JSON object`);
  if (!('name' in d)) throw new TaskError(`${where ?? 'task declaration'} needs a 'name'`);
  where = where ?? `task ${repr(d.name)}`;
  const unknown = Object.keys(d).filter((k) => !(k in FIELDS)).sort();
  if (unknown.length) throw new ConfigError(`unknown ${where} key(s) ${repr(unknown)}; known: ${repr(Object.keys(FIELDS).sort())}`);
  /** @type {Record<string, any>} */
  const out = { ...DEFAULTS };
  for (const [k, v] of Object.entries(d)) {
    const [what, test, convert] = FIELDS[k];
    if (!test(v)) throw new ConfigError(`${where}.${k}: expected ${what}, got ${show(v)}`);
    out[k] = convert(v);
  }
  return checkTask(/** @type {TaskSpec} */ (out));
}

/**
 * The checks of `TaskSpec.__post_init__`, in its order and words.
 * @param {TaskSpec} t
 */
function checkTask(t) {
  const n = repr(t.name);
  if (!NAME_RE.test(t.name)) {
    throw new TaskError(`invalid task name ${n}: expected lower-case letters, digits, '-' or '_', starting with a letter (at most 32 characters)`);
  }
  if (!t.inputs.length || t.inputs[0] !== 'noisy') throw new TaskError(`task ${n}: inputs must start with 'noisy', got ${repr(t.inputs)}`);
  const bad = t.inputs.filter((p) => !INPUT_PARTS.includes(p));
  if (bad.length) throw new TaskError(`task ${n}: unknown input part(s) ${repr(bad)}; known: ${repr(INPUT_PARTS)}`);
  if (new Set(t.inputs).size !== t.inputs.length) throw new TaskError(`task ${n}: input parts repeat: ${repr(t.inputs)}`);
  if (!GUIDANCE_KINDS.includes(t.guidance)) throw new TaskError(`task ${n}: guidance ${repr(t.guidance)} is not one of ${repr(GUIDANCE_KINDS)}`);
  if (t.guidance === 'image_text' && !needsCondition(t)) throw new TaskError(`task ${n}: image guidance needs an image input, inputs are ${repr(t.inputs)}`);
  if (t.guidance === 'image_text' && t.image_guidance_scale === null) throw new TaskError(`task ${n}: guidance 'image_text' needs image_guidance_scale`);
  if (!isInt(t.condition_scale) || t.condition_scale < 1 || t.condition_scale > 8) {
    throw new TaskError(`task ${n}: condition_scale must be an integer from 1 to 8, got ${repr(t.condition_scale)}`);
  }
  if (!IMAGE_LATENTS.includes(t.image_latents)) throw new TaskError(`task ${n}: image_latents ${repr(t.image_latents)} is not one of ${repr(IMAGE_LATENTS)}`);
  if (!(t.strength > 0 && t.strength <= 1)) throw new TaskError(`task ${n}: strength must be a number in (0, 1], got ${repr(t.strength)}`);
  if (t.strength < 1 && !needsCondition(t)) {
    throw new TaskError(`task ${n}: strength ${fmtG(t.strength)} needs an image input (a task without one always starts from noise)`);
  }
  if (!isInt(t.steps) || t.steps < 1 || t.steps > 1000) throw new TaskError(`task ${n}: steps must be an integer from 1 to 1000, got ${repr(t.steps)}`);
  if (Math.trunc(t.steps * t.strength) < 1) {
    throw new TaskError(`task ${n}: strength ${fmtG(t.strength)} with ${t.steps} steps runs no denoising step (int(${t.steps} x ${fmtG(t.strength)}) = 0)`);
  }
  if (t.condition_scale > 1 && !needsCondition(t)) throw new TaskError(`task ${n}: condition_scale ${t.condition_scale} needs an image input`);
  return Object.freeze(t);
}

/** @type {Record<string, Record<string, any>>} */
export const BUILTIN_TASKS = {
  t2i: { name: 't2i', inputs: ['noisy'], uses_text: true, guidance: 'text', guidance_scale: 7.5 },
  edit: { name: 'edit', inputs: ['noisy', 'image'], uses_text: true, guidance: 'image_text', guidance_scale: 7.5, image_guidance_scale: 1.6, image_latents: 'unscaled' },
  sr: { name: 'sr', inputs: ['noisy', 'image'], uses_text: false, guidance: 'none', guidance_scale: 1.0, condition_scale: 2 },
  inpaint: { name: 'inpaint', inputs: ['noisy', 'image'], uses_text: true, guidance: 'image_text', guidance_scale: 4.0, image_guidance_scale: 1.5, image_latents: 'unscaled' },
  'inpaint-mask': { name: 'inpaint-mask', inputs: ['noisy', 'mask', 'masked_image'], uses_text: true, guidance: 'image_text', guidance_scale: 4.0, image_guidance_scale: 1.5 },
};

/**
 * A task from its manifest entry (`task_from_record`): the package's own keys ignored; fields an
 * older entry lacks take the legacy value, else the built-in task's, else the default.
 * @param {Record<string, any>} record
 * @returns {TaskSpec}
 */
export function taskFromRecord(record) {
  const name = record.name;
  const base = typeof name === 'string' && Object.hasOwn(BUILTIN_TASKS, name) ? { ...DEFAULTS, ...BUILTIN_TASKS[name] } : {};
  /** @type {Record<string, any>} */
  const legacy = {};
  for (const [k, v] of Object.entries(LEGACY_FIELDS)) if (!(k in record)) legacy[k] = v;
  /** @type {Record<string, any>} */
  const own = {};
  for (const [k, v] of Object.entries(record)) if (k in FIELDS) own[k] = v;
  return taskFromDict({ ...base, ...legacy, ...own });
}

/**
 * Channels of the task's UNet input for a model with `latentChannels`.
 * @param {TaskSpec} spec
 * @param {number} latentChannels
 */
export function inChannels(spec, latentChannels) {
  return spec.inputs.reduce((n, p) => n + (p === 'mask' ? 1 : latentChannels), 0);
}

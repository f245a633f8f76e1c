/**
 * The package manifest's schema (mirrors `runtime/manifest.py`): checked before anything trusts it.
 *
 * `manifest.json` (format `taskfold-package`, schema 1) is the only description of a package the
 * runtime believes. A package is fetched from anywhere, so {@link validateManifest} checks the whole
 * structure and every type up front and throws one {@link PackageError} naming the key and what was
 * expected (`manifest: graphs[2].path: expected a relative path string …, got int 7`), in the
 * Python runtime's words.
 */

import { PackageError, repr } from './errors.js';
import { parseJsonChecked, unbox } from './json.js';
import { GUIDANCE_KINDS, INPUT_PARTS, isFiniteNumber, isInt, taskFromRecord } from './tasks.js';
import { TaskfoldError } from './errors.js';
import { bound } from './limits.js';

export const FORMAT = 'taskfold-package';
export const SCHEMA_VERSION = 1;
export const MANIFEST = 'manifest.json';
export const WEIGHT_INDEX_FORMAT = 'taskfold-weight-index';
export const WEIGHT_INDEX_SCHEMA_VERSION = 1;
/** Largest manifest / JSON side file read (bytes); a real SD manifest is a few hundred KB. */
export const MAX_JSON_BYTES = 64 << 20;
export const WEIGHT_DTYPES = ['float32', 'float16', 'float64', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool'];
/** Bytes per element of each weight dtype. */
export const DTYPE_BYTES = /** @type {Record<string, number>} */ ({
  float32: 4, float16: 2, float64: 8, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1,
});
/** The package version this runtime reports in its messages. */
export const VERSION = '0.1.0';
const HINT = 'the package is malformed or was not written by `taskfold export`; re-export it';

// --- checkers ---------------------------------------------------------------------------------

/** @typedef {{ what: string, check: (value: any, where: string) => any }} Check */

/**
 * Python's `json.dumps` (ASCII-escaped, `', '` and `': '` separators), for messages.
 * @param {any} v
 * @returns {string}
 */
export function jsonDumps(v) {
  if (v === null || v === undefined) return 'null';
  if (v === true) return 'true';
  if (v === false) return 'false';
  if (v instanceof Number) return repr(v);
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : repr(v);
  if (typeof v === 'string') {
    return `"${[...v].map((ch) => {
      const c = /** @type {number} */ (ch.codePointAt(0));
      if (ch === '"') return '\\"';
      if (ch === '\\') return '\\\\';
      if (ch === '\n') return '\\n';
      if (ch === '\r') return '\\r';
      if (ch === '\t') return '\\t';
      if (ch === '\b') return '\\b';
      if (ch === '\f') return '\\f';
      if (c < 0x20 || (c >= 0x7f && c < 0x10000)) return c < 0x7f ? `\\u${c.toString(16).padStart(4, '0')}` : c === 0x7f ? ch : `\\u${c.toString(16).padStart(4, '0')}`;
      if (c >= 0x10000) {
        const hi = 0xd800 + ((c - 0x10000) >> 10);
        const lo = 0xdc00 + ((c - 0x10000) & 0x3ff);
        return `\\u${hi.toString(16)}\\u${lo.toString(16)}`;
      }
      return ch;
    }).join('')}"`;
  }
  if (Array.isArray(v)) return `[${v.map(jsonDumps).join(', ')}]`;
  return `{${Object.entries(v).map(([k, x]) => `${jsonDumps(k)}: ${jsonDumps(x)}`).join(', ')}}`;
}

/** @param {any} v Python's `_show` in manifest.py */
function show(v) {
  const text = jsonDumps(v).slice(0, 60);
  if (v !== null && typeof v === 'object' && !(v instanceof Number)) return text;
  const type = v === null ? 'NoneType' : typeof v === 'string' ? 'str' : typeof v === 'boolean' ? 'bool'
    : v instanceof Number ? 'float' : Number.isInteger(v) ? 'int' : 'float';
  return `${type} ${text}`;
}

/**
 * @param {string} what
 * @param {string} where
 * @param {any} value
 */
function refuse(what, where, value) {
  return new PackageError(`manifest: ${where}: expected ${what}, got ${show(value)}`, HINT);
}

/**
 * @param {string} what
 * @param {(v: any) => boolean} test
 * @returns {Check}
 */
export function scalar(what, test) {
  return { what, check(v, where) { if (!test(v)) throw refuse(what, where, v); return v; } };
}

/** @param {Check} inner @returns {Check} */
export function opt(inner) {
  return { what: `${inner.what} or null`, check: (v, where) => (v === null ? null : inner.check(v, where)) };
}

/** @param {Check} item @param {number} [minLen] @param {number} [maxLen] @returns {Check} */
export function listOf(item, minLen = 0, maxLen = 100000) {
  const what = `a list of ${item.what}${minLen ? ` (at least ${minLen})` : ''} (at most ${maxLen})`;
  return {
    what,
    check(v, where) {
      if (!Array.isArray(v) || v.length < minLen || v.length > maxLen) throw refuse(what, where, v);
      v.forEach((x, i) => item.check(x, `${where}[${i}]`));
      return v;
    },
  };
}

/** @param {Check} item @param {Check} [key] @param {number} [maxLen] @returns {Check} */
export function dictOf(item, key, maxLen = 100000) {
  const what = `an object of ${item.what} (at most ${maxLen} keys)`;
  return {
    what,
    check(v, where) {
      if (!isObject(v) || Object.keys(v).length > maxLen) throw refuse(what, where, v);
      for (const [k, x] of Object.entries(v)) {
        if (key) key.check(k, `${where} key ${repr(k)}`);
        item.check(x, `${where}[${repr(k)}]`);
      }
      return v;
    },
  };
}

/**
 * An object with `required` and `optional` keys (others are allowed and ignored).
 * @param {Record<string, Check>} required
 * @param {Record<string, Check>} [optional]
 * @returns {Check}
 */
export function obj(required, optional = {}) {
  return {
    what: 'an object',
    check(v, where) {
      if (!isObject(v)) throw refuse('an object', where, v);
      for (const [k, c] of Object.entries(required)) {
        if (!Object.hasOwn(v, k)) throw new PackageError(`manifest: ${where}: missing key ${repr(k)}`, HINT);
        c.check(v[k], `${where}.${k}`);
      }
      for (const [k, c] of Object.entries(optional)) if (Object.hasOwn(v, k)) c.check(v[k], `${where}.${k}`);
      return v;
    },
  };
}

/** @param {any} v */
function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Number);
}

/**
 * A relative POSIX path inside the package: not absolute, no `..` component, no backslash or NUL.
 * @param {any} v
 */
export function isRelPath(v) {
  if (typeof v !== 'string' || !v || [...v].length > bound('path_chars') || v.includes('\\') || v.includes('\0')) return false;
  for (const ch of v) {
    const c = /** @type {number} */ (ch.codePointAt(0));
    if (c < 32 || (c >= 127 && c < 160)) return false;
  }
  if (v.startsWith('/') || /^[A-Za-z]:/.test(v)) return false;
  return v.split('/').every((p) => p !== '..');
}

const STR = scalar('a string', (v) => typeof v === 'string');
const BOOL = scalar('true or false', (v) => typeof v === 'boolean');
const INT = scalar('an integer', isInt);
const NONNEG = scalar('an integer >= 0', (v) => isInt(v) && v >= 0);
const POS = scalar('an integer >= 1', (v) => isInt(v) && v >= 1);
const NUM = scalar('a finite number', isFiniteNumber);
const PATH = scalar("a relative path string inside the package (no '..', not absolute)", isRelPath);
const NAME = scalar("a file name (no '/', no '..')", (v) => isRelPath(v) && !v.includes('/') && v !== '.');
const SHA256 = scalar('a sha256 hex digest', (v) => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v));
const DIM = scalar('an integer from 1 to 2**31 or an axis name (a word)',
  (v) => (isInt(v) && v >= 1 && v <= 2 ** 31) || (typeof v === 'string' && /^[\p{L}\p{N}_]{1,64}$/u.test(v)));

/** @param {...any} choices */
export function oneOf(...choices) {
  return scalar(`one of ${choices.map(repr).join(', ')}`, (v) => choices.includes(v));
}

/**
 * An integer from `low` to the limits' bound `name` (package_schema.json).
 * @param {string} name
 * @param {number} [low]
 */
function upto(name, low = 1) {
  const top = bound(name);
  return scalar(`an integer from ${low} to ${top}`, (v) => isInt(v) && v >= low && v <= top);
}

export const TENSOR_DTYPES = ['float32', 'float16', 'int64', 'int32', 'bool', 'uint8'];
const TENSOR = obj({
  name: scalar('a tensor name', (v) => typeof v === 'string' && v.length > 0 && [...v].length <= 256),
  shape: listOf(DIM, 0, bound('tensor_rank')), dtype: oneOf(...TENSOR_DTYPES),
});
const FILE_ENTRY = obj({ bytes: NONNEG, sha256: SHA256 });
const COMPONENT_GRAPH = obj({ file: NAME, inputs: listOf(TENSOR, 1, 16), outputs: listOf(TENSOR, 1, 16) },
  { weights: listOf(NAME, 0, 4096) });
const TASK = obj(
  { inputs: listOf(oneOf(...INPUT_PARTS), 1, 8), uses_text: BOOL, guidance: oneOf(...GUIDANCE_KINDS), guidance_scale: NUM, in_channels: upto('channels') },
  { name: STR, image_guidance_scale: opt(NUM), graphs: dictOf(PATH), strength: NUM, steps: POS },
);
export const LAYOUTS = ['graphs', 'adapters'];
const GRAPH = obj({ task: STR, format: STR, path: PATH }, {
  precision: STR, external_data: listOf(PATH, 0, 4096), weight_index: opt(PATH), inputs: listOf(TENSOR, 1, 16),
  outputs: listOf(TENSOR, 1, 16), function: STR, refittable_engine: PATH, refit_from: PATH,
  layout: oneOf(...LAYOUTS), adapter: PATH, backbone_id: NONNEG, task_channels: upto('channels'),
  task_tensors: listOf(TENSOR, 0, bound('task_tensors')),
});
const TASK_NAME = scalar("a task name (lower case letters, digits, '-' or '_', at most 32)",
  (v) => typeof v === 'string' && /^[a-z][a-z0-9_-]{0,31}$/.test(v));
export const MANIFEST_SCHEMA = obj({
  format: STR,
  schema_version: INT,
  sample: obj({
    height: upto('latent_side'), width: upto('latent_side'), batch: upto('batch'), text_len: upto('text_len'),
    image_height: upto('image_side'), image_width: upto('image_side'),
  }),
  codec: obj({ kind: oneOf('identity', 'vae'), scale_factor: upto('latent_side'), latent_channels: upto('channels'), scaling_factor: NUM },
    { shift_factor: opt(NUM), graphs: opt(dictOf(COMPONENT_GRAPH, undefined, 8)) }),
  tasks: dictOf(TASK, TASK_NAME, bound('tasks')),
  graphs: listOf(GRAPH, 0, bound('graphs')),
  files: dictOf(FILE_ENTRY, PATH, bound('files')),
  scheduler: obj({ num_train_timesteps: upto('num_train_timesteps', 2) }),
}, {
  dtr: opt(obj({ timesteps: upto('num_train_timesteps', 2), alpha: NUM, beta: NUM })),
  text_encoder: opt(obj({
    graph: obj({
      file: NAME, inputs: listOf(TENSOR, 1, 16), outputs: listOf(TENSOR, 1, 16),
      tokenizer: obj({ files: listOf(NAME, 1, 8), max_length: upto('tokenizer_max_length', 2) }, { pad_id: upto('vocab_size', 0) }),
    }, { weights: listOf(NAME, 0, 4096) }),
  })),
  model: obj({}, { unet_config: opt(obj({})), upcycle: opt(obj({})) }),
  sampling: opt(obj({ source: STR }, { file: NAME, tasks: listOf(STR) })),
});
const WEIGHT_RECORD = obj({
  name: STR, file: NAME, offset: NONNEG, length: NONNEG, shape: listOf(NONNEG, 0, bound('tensor_rank')), dtype: oneOf(...WEIGHT_DTYPES),
});
const WEIGHT_INDEX_SCHEMA = obj({ format: STR, schema_version: INT, initializers: listOf(WEIGHT_RECORD, 0, bound('graph.initializers')) });

// --- reading ----------------------------------------------------------------------------------

/**
 * @param {any} doc
 * @param {string} fmt
 * @param {number} schema
 * @param {string} where
 */
export function checkVersioned(doc, fmt, schema, where) {
  if (!isObject(doc) || doc.format !== fmt) {
    const got = isObject(doc) ? doc.format : Array.isArray(doc) ? 'list' : typeof doc;
    throw new PackageError(`${where} is not a taskfold ${fmt} document (format ${repr(got)}, expected ${repr(fmt)})`,
      'give the --out of `taskfold export`');
  }
  const version = doc.schema_version;
  if (!isInt(version) || version > schema || version < 1) {
    throw new PackageError(`${where} has schema_version ${repr(version)}; this taskfold (${VERSION}) reads schema ${schema} and older`,
      'upgrade taskfold to read it');
  }
  return doc;
}

/**
 * The manifest, checked: structure and types, and the cross-references between its parts.
 * Takes the document as {@link parseJsonChecked} returns it; returns it with plain numbers.
 * @param {any} doc
 * @returns {Manifest}
 */
export function validateManifest(doc) {
  checkVersioned(doc, FORMAT, SCHEMA_VERSION, MANIFEST);
  MANIFEST_SCHEMA.check(doc, 'manifest');
  const taskNames = Object.keys(doc.tasks);
  doc.graphs.forEach((/** @type {any} */ g, /** @type {number} */ i) => {
    if (!Object.hasOwn(doc.tasks, g.task)) {
      throw new PackageError(`manifest: graphs[${i}].task ${repr(g.task)} is not one of the package's tasks (${taskNames.join(', ')})`,
        're-export the package');
    }
    if (g.format !== 'diffusers') obj({ inputs: listOf(TENSOR, 1), outputs: listOf(TENSOR, 1) }).check(g, `manifest.graphs[${i}]`);
    if (g.layout === 'adapters' && (g.format === 'onnx' || g.format === 'tensorrt')) {  // its task file and backbone
      obj({ adapter: PATH, backbone_id: NONNEG, task_channels: POS, task_tensors: listOf(TENSOR, 1) }).check(g, `manifest.graphs[${i}]`);
      const names = g.task_tensors.map((/** @type {any} */ t) => t.name);
      const inputs = new Set(g.inputs.map((/** @type {any} */ t) => t.name));
      const clash = names.filter((/** @type {string} */ n) => names.indexOf(n) !== names.lastIndexOf(n) || inputs.has(n));
      if (clash.length) {
        throw new PackageError(`manifest: graphs[${i}].task_tensors: ${repr(clash[0])} is named twice or like one of the graph's inputs`, 're-export the package');
      }
    }
  });
  for (const [name, t] of Object.entries(doc.tasks)) {
    if (t.inputs[0] !== 'noisy') {
      throw new PackageError(`manifest: tasks[${repr(name)}].inputs must start with 'noisy', got ${repr(t.inputs)}`, 're-export the package');
    }
    try {
      taskFromRecord(t);
    } catch (e) {
      if (!(e instanceof TaskfoldError)) throw e;
      throw new PackageError(`manifest: tasks[${repr(name)}]: ${e.message}`, 're-export the package');
    }
  }
  return unbox(doc);
}

/**
 * The manifest from its bytes: parsed (UTF-8 JSON, no NaN) and validated.
 * @param {Uint8Array | string} data
 */
export function readManifest(data) {
  return validateManifest(parseJsonChecked(data, MANIFEST));
}

/**
 * @typedef {{ name: string, file: string, offset: number, length: number, shape: number[], dtype: string }} WeightRecordDoc
 * @typedef {{ name: string, shape: (number|string)[], dtype: string }} TensorDoc
 * @typedef {{ task: string, format: string, path: string, inputs: TensorDoc[], outputs: TensorDoc[], layout?: string,
 *   external_data?: string[], weight_index?: string | null, adapter?: string, task_tensors?: TensorDoc[],
 *   task_channels?: number, backbone_id?: number, [k: string]: any }} GraphDoc
 * @typedef {{ file: string, inputs: TensorDoc[], outputs?: TensorDoc[], weights?: string[] }} ComponentDoc
 * @typedef {{ format: string, schema_version: number, sample: { height: number, width: number, batch: number, text_len: number,
 *   image_height: number, image_width: number }, codec: { kind: string, scale_factor: number, latent_channels: number,
 *   scaling_factor: number, shift_factor?: number | null, graphs?: Record<string, ComponentDoc> | null },
 *   tasks: Record<string, Record<string, any>>, graphs: GraphDoc[], files: Record<string, { bytes: number, sha256: string }>,
 *   scheduler: Record<string, any>, text_encoder?: { graph: ComponentDoc & { tokenizer: { files: string[], max_length: number,
 *   pad_id?: number } } } | null, [k: string]: any }} Manifest
 */

/**
 * The records of a graph's weight index, each one's `length` equal to its shape x dtype size.
 * @param {any} doc as parseJsonChecked returns it
 * @param {string} where
 * @returns {WeightRecordDoc[]}
 */
export function validateWeightIndex(doc, where) {
  checkVersioned(doc, WEIGHT_INDEX_FORMAT, WEIGHT_INDEX_SCHEMA_VERSION, where);
  try {
    WEIGHT_INDEX_SCHEMA.check(doc, where);
  } catch (e) {
    if (e instanceof PackageError) throw new PackageError(e.message.replace('manifest: ', ''), e.hint);
    throw e;
  }
  const recs = unbox(doc).initializers;
  recs.forEach((/** @type {WeightRecordDoc} */ rec, /** @type {number} */ i) => {
    const want = rec.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[rec.dtype];
    if (want !== rec.length) {
      throw new PackageError(`${where}: initializers[${i}] (${repr(rec.name)}) has length ${rec.length}, but shape ${repr(rec.shape)} of ${rec.dtype} is ${want} bytes`,
        'the package is damaged; re-copy or re-export it');
    }
  });
  return recs;
}

/**
 * A small, bounded reader of safetensors files (mirrors `runtime/safetensors_io.py`): the adapters
 * layout's per-task tensors, fed to the shared graph as ordinary inputs.
 *
 * Format: 8 bytes N (u64 little-endian), N bytes of UTF-8 JSON `{name: {dtype, shape, data_offsets},
 * "__metadata__": {str: str}}`, then the data buffer (each tensor `[begin, end)` of it, little-endian,
 * C order). A package's file is untrusted, so {@link parseSafetensors} refuses, each with one
 * PackageError naming the file and the key: a header longer than the package limits'
 * `bytes.adapter_header` or than the file, a header that is not a JSON object (or repeats a key, or
 * holds NaN), an entry that is not exactly dtype/shape/data_offsets, an unknown dtype, a bad shape,
 * offsets outside the buffer, overlapping, leaving holes, or not `prod(shape) x itemsize` long.
 */

import { PackageError, repr } from './errors.js';
import { parseJsonChecked, unbox } from './json.js';
import { bound } from './limits.js';

export const METADATA = '__metadata__';
/** safetensors dtype -> [numpy name, bytes per element] (BF16, F8 are refused as unknown). */
export const DTYPES = /** @type {Record<string, [string, number]>} */ ({
  F64: ['float64', 8], F32: ['float32', 4], F16: ['float16', 2], I64: ['int64', 8], I32: ['int32', 4], I16: ['int16', 2],
  I8: ['int8', 1], U8: ['uint8', 1], BOOL: ['bool', 1],
});
const HINT = 'the package is damaged or was crafted; re-copy or re-export it (`taskfold verify PKG`)';

/** @typedef {{ dtype: string, shape: number[], data: Uint8Array }} RawTensor the tensor's bytes, little-endian */

/** @param {string} where @param {string} problem */
const fail = (where, problem) => new PackageError(`${where}: ${problem}`, HINT);

/**
 * `[tensors, metadata]` of the safetensors bytes `data`.
 * @param {Uint8Array} data
 * @param {string} where
 * @returns {[Map<string, RawTensor>, Record<string, string>]}
 */
export function parseSafetensors(data, where) {
  if (data.length < 8) throw fail(where, `${data.length} bytes, shorter than the 8-byte header length of a safetensors file`);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const n = Number(view.getBigUint64(0, true));
  const max = bound('bytes.adapter_header');
  if (n > max) throw fail(where, `header length ${n} is more than the ${max} bytes allowed`);
  if (8 + n > data.length) throw fail(where, `header length ${n} runs past the end of the file (${data.length} bytes)`);
  let header;
  try {
    header = parseJsonChecked(data.subarray(8, 8 + n), where);
    repeatedKey(new TextDecoder().decode(data.subarray(8, 8 + n)));
  } catch (e) {
    const msg = /** @type {Error} */ (e).message.replace(`${where} is not valid JSON: `, '');
    throw fail(where, `the header is not valid JSON (${msg.slice(0, 200)})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header) || header instanceof Number) {
    throw fail(where, `the header is not a JSON object (got ${Array.isArray(header) ? 'list' : typeof header})`);
  }
  const start = 8 + n;
  const size = data.length - start;
  const meta = Object.hasOwn(header, METADATA) ? header[METADATA] : {};
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta) || !Object.values(meta).every((v) => typeof v === 'string')) {
    throw fail(where, `key '${METADATA}': expected an object of strings`);
  }
  /** @type {[number, number, string][]} */
  const spans = [];
  /** @type {Map<string, RawTensor>} */
  const out = new Map();
  for (const [name, entry] of Object.entries(header)) {
    if (name === METADATA) continue;
    const what = `key ${repr(name)}`;
    if (!name) throw fail(where, 'a tensor has an empty name');
    const keys = entry !== null && typeof entry === 'object' && !Array.isArray(entry) ? Object.keys(entry).sort() : null;
    if (!keys || keys.join() !== 'data_offsets,dtype,shape') {
      throw fail(where, `${what}: expected exactly dtype, shape and data_offsets, got ${keys ? repr(keys) : typeof entry}`);
    }
    const { dtype, shape, data_offsets: offsets } = entry;
    if (!Object.hasOwn(DTYPES, dtype)) throw fail(where, `${what}: unknown dtype ${repr(unbox(dtype))} (known: ${Object.keys(DTYPES).join(', ')})`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) throw fail(where, `${what}: shape ${repr(unbox(shape))} is not a list of integers >= 0`);
    if (!(Array.isArray(offsets) && offsets.length === 2 && offsets.every((o) => Number.isInteger(o)) && offsets[0] >= 0 && offsets[0] <= offsets[1] && offsets[1] <= size)) {
      throw fail(where, `${what}: data_offsets ${repr(unbox(offsets))} are not [begin, end] inside the ${size}-byte data buffer`);
    }
    const want = shape.reduce((a, b) => a * b, 1) * DTYPES[dtype][1];
    if (offsets[1] - offsets[0] !== want) {
      throw fail(where, `${what}: data_offsets ${repr(offsets)} span ${offsets[1] - offsets[0]} bytes, but shape ${repr(shape)} of ${dtype} is ${want} bytes`);
    }
    spans.push([offsets[0], offsets[1], name]);
    out.set(name, { dtype: DTYPES[dtype][0], shape, data: data.slice(start + offsets[0], start + offsets[1]) });
  }
  let end = 0;
  for (const [begin, stop, name] of spans.sort((a, b) => a[0] - b[0] || a[1] - b[1] || (a[2] < b[2] ? -1 : 1))) {
    if (begin < end) throw fail(where, `key ${repr(name)}: data_offsets [${begin}, ${stop}] overlap another tensor's bytes`);
    if (begin > end) throw fail(where, `key ${repr(name)}: bytes ${end}..${begin} of the data buffer belong to no tensor`);
    end = stop;
  }
  if (end !== size) throw fail(where, `bytes ${end}..${size} of the data buffer belong to no tensor`);
  return [out, /** @type {Record<string, string>} */ (meta)];
}

/** Refuse a JSON object that repeats a key (Python's `object_pairs_hook` check). @param {string} text */
function repeatedKey(text) {
  // keys of each object, tracked with a stack while scanning strings outside string literals
  /** @type {Set<string>[]} */
  const stack = [];
  /** @type {boolean[]} whether the next string in this object is a key */
  const expectKey = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '{') { stack.push(new Set()); expectKey.push(true); } else if (c === '[') { stack.push(/** @type {any} */ (null)); expectKey.push(false); } else if (c === '}' || c === ']') { stack.pop(); expectKey.pop(); } else if (c === ':') expectKey[expectKey.length - 1] = false;
    else if (c === ',' && stack[stack.length - 1] !== null) expectKey[expectKey.length - 1] = true;
    else if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      const keys = stack[stack.length - 1];
      if (keys && expectKey[expectKey.length - 1]) {
        const key = JSON.parse(text.slice(i, j + 1));
        if (keys.has(key)) throw new SyntaxError(`key ${repr(key)} appears twice`);
        keys.add(key);
      }
      i = j;
    }
  }
}

/**
 * The tensors of `data`, exactly `expected` (`{name, shape, dtype}` each), in that order, as float32
 * arrays (float16 ones widened); `metadata`: `__metadata__` values the file must hold.
 * @param {Uint8Array} data
 * @param {string} where
 * @param {import('./manifest.js').TensorDoc[]} expected
 * @param {Record<string, string>} [metadata]
 * @returns {Map<string, RawTensor>}
 */
export function readTensors(data, where, expected, metadata = {}) {
  const [tensors, meta] = parseSafetensors(data, where);
  const names = expected.map((t) => t.name);
  const extra = [...tensors.keys()].filter((n) => !names.includes(n));
  if (extra.length) throw fail(where, `key ${repr(extra[0])} is not one of the graph's task tensors (${extra.length} such key${extra.length > 1 ? 's' : ''})`);
  const missing = names.filter((n) => !tensors.has(n));
  if (missing.length) throw fail(where, `key ${repr(missing[0])} is missing (${missing.length} of the graph's ${names.length} task tensors are)`);
  for (const t of expected) {
    const a = /** @type {RawTensor} */ (tensors.get(t.name));
    if (a.shape.join() !== t.shape.join() || a.shape.length !== t.shape.length || a.dtype !== t.dtype) {
      throw fail(where, `key ${repr(t.name)}: ${a.dtype} ${repr(a.shape)}, the graph takes ${t.dtype} ${repr(t.shape)}`);
    }
  }
  for (const [key, want] of Object.entries(metadata)) {
    if (meta[key] !== want) throw fail(where, `${METADATA} key ${repr(key)} is ${repr(meta[key] ?? null)}, expected ${repr(want)}`);
  }
  return new Map(names.map((n) => [n, /** @type {RawTensor} */ (tensors.get(n))]));
}

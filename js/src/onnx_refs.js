/**
 * Which files an ONNX graph makes ONNX Runtime read: its external-data references, from the
 * protobuf (mirrors `runtime/onnx_refs.py`). The reader must know them to confine and verify them,
 * and to hand ONNX Runtime Web the bytes of each location; only the fields that can hold tensors
 * are walked:
 *
 *   ModelProto graph = 7, functions = 25; GraphProto node = 1, initializer = 5, sparse_initializer = 15;
 *   NodeProto attribute = 5; AttributeProto t = 5, g = 6, tensors = 10, graphs = 11, sparse_tensor = 22,
 *   sparse_tensors = 23; SparseTensorProto values = 1, indices = 2; FunctionProto node = 7;
 *   TensorProto name = 8, external_data = 13, data_location = 14; StringStringEntryProto key = 1, value = 2.
 */

import { PackageError, repr } from './errors.js';

const MAX_DEPTH = 64;
const LOCATION = new TextEncoder().encode('location');
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** @typedef {{ tensor: string, location: string, offset: number, length: number | null }} ExternalRef */

export class Malformed extends Error {}

/**
 * @param {Uint8Array} buf
 * @param {number} pos
 * @param {number} end
 * @returns {[number, number]}
 */
function varint(buf, pos, end) {
  let result = 0;
  let scale = 1;
  for (let shift = 0; ; shift += 7) {
    if (pos >= end || shift > 63) throw new Malformed('truncated varint');
    const b = buf[pos++];
    result += (b & 0x7f) * scale;
    scale *= 128;
    if (!(b & 0x80)) return [result, pos];
  }
}

/**
 * The varint at `pos` as a signed 64-bit integer, exactly (what protobuf's int64 fields hold: a
 * negative dimension or axis; {@link fields} gives varints as numbers, exact only below 2**53).
 * @param {Uint8Array} buf
 * @param {number} pos
 * @param {number} end
 * @returns {[bigint, number]}
 */
export function varint64(buf, pos, end) {
  let result = 0n;
  for (let shift = 0n; ; shift += 7n) {
    if (pos >= end || shift > 63n) throw new Malformed('truncated varint');
    const b = buf[pos++];
    result |= BigInt(b & 0x7f) << shift;
    if (!(b & 0x80)) return [BigInt.asIntN(64, result), pos];
  }
}

/**
 * `[field, wire, value, at]` of every field of the message `buf[start:end]`; a length-delimited value
 * is its `[start, end]` span, a varint its number, others null; `at` is where the value's bytes start
 * (for {@link varint64} and fixed-width values).
 * @param {Uint8Array} buf
 * @param {number} start
 * @param {number} end
 * @returns {Generator<[number, number, any, number]>}
 */
export function* fields(buf, start, end) {
  let pos = start;
  while (pos < end) {
    let key;
    [key, pos] = varint(buf, pos, end);
    const field = Math.floor(key / 8);
    const wire = key % 8;
    const at = pos;
    let value = null;
    if (wire === 0) [value, pos] = varint(buf, pos, end);
    else if (wire === 1) pos += 8;
    else if (wire === 2) {
      let n;
      [n, pos] = varint(buf, pos, end);
      value = [pos, pos + n];
      pos += n;
    } else if (wire === 5) pos += 4;
    else throw new Malformed(`wire type ${wire}`);
    if (pos > end) throw new Malformed('a field runs past its message');
    yield [field, wire, value, at];
  }
}

/** @param {Uint8Array} buf @param {number[]} span */
export function text(buf, span) {
  try {
    return utf8.decode(buf.subarray(span[0], span[1]));
  } catch {
    throw new Malformed('a string field is not UTF-8');
  }
}

/** @param {Uint8Array} buf @param {number[]} span */
function mayHoldExternal(buf, span) {
  const [s, e] = span;
  outer: for (let i = s; i + LOCATION.length <= e; i++) {
    for (let j = 0; j < LOCATION.length; j++) if (buf[i + j] !== LOCATION[j]) continue outer;
    return true;
  }
  return false;
}

/** @param {Uint8Array} buf @param {number[]} span @param {ExternalRef[]} out */
function tensor(buf, span, out) {
  let name = '';
  let external = false;
  /** @type {Map<string, string>} */
  const entries = new Map();
  for (const [field, wire, v] of fields(buf, span[0], span[1])) {
    if (field === 8 && wire === 2) name = text(buf, v);
    else if (field === 14 && wire === 0) external = v === 1;
    else if (field === 13 && wire === 2) {
      let key = '';
      let value = '';
      for (const [f2, w2, v2] of fields(buf, v[0], v[1])) {
        if (f2 === 1 && w2 === 2) key = text(buf, v2);
        else if (f2 === 2 && w2 === 2) value = text(buf, v2);
      }
      entries.set(key, value);
    }
  }
  if (external || entries.size) out.push(externalRef(name, entries));
}

/**
 * The reference of tensor `name` from its `external_data` entries (mirrors `external_ref` of
 * `runtime/onnx_refs.py`; shared with graph admission); Malformed naming what is wrong.
 * @param {string} name
 * @param {Map<string, string>} entries
 * @returns {ExternalRef}
 */
export function externalRef(name, entries) {
  const location = entries.get('location');
  if (location === undefined) throw new Malformed(`external tensor ${repr(name)} has no location`);
  const int = (/** @type {string} */ s) => (/^\s*[-+]?\d+\s*$/.test(s) ? Number(s) : NaN);
  const offset = int(entries.get('offset') ?? '0');
  const length = entries.has('length') ? int(/** @type {string} */ (entries.get('length'))) : null;
  if (Number.isNaN(offset) || (length !== null && Number.isNaN(length))) {
    throw new Malformed(`external tensor ${repr(name)} has a non-integer offset or length`);
  }
  if (offset < 0 || (length !== null && length < 0)) throw new Malformed(`external tensor ${repr(name)} has a negative offset or length`);
  return { tensor: name, location, offset, length };
}

/** @param {Uint8Array} buf @param {number[]} span @param {ExternalRef[]} out */
function sparse(buf, span, out) {
  for (const [field, wire, v] of fields(buf, span[0], span[1])) if ((field === 1 || field === 2) && wire === 2) tensor(buf, v, out);
}

/** @param {Uint8Array} buf @param {number[]} span @param {ExternalRef[]} out @param {number} depth */
function attribute(buf, span, out, depth) {
  for (const [field, wire, v] of fields(buf, span[0], span[1])) {
    if (wire !== 2) continue;
    if (field === 5 || field === 10) tensor(buf, v, out);
    else if (field === 6 || field === 11) graph(buf, v, out, depth + 1);
    else if (field === 22 || field === 23) sparse(buf, v, out);
  }
}

/** @param {Uint8Array} buf @param {number[]} span @param {ExternalRef[]} out @param {number} depth */
function node(buf, span, out, depth) {
  if (!mayHoldExternal(buf, span)) return;
  for (const [field, wire, v] of fields(buf, span[0], span[1])) if (field === 5 && wire === 2) attribute(buf, v, out, depth);
}

/** @param {Uint8Array} buf @param {number[]} span @param {ExternalRef[]} out @param {number} depth */
function graph(buf, span, out, depth) {
  if (depth > MAX_DEPTH) throw new Malformed(`subgraphs nested deeper than ${MAX_DEPTH}`);
  for (const [field, wire, v] of fields(buf, span[0], span[1])) {
    if (wire !== 2) continue;
    if (field === 1) node(buf, v, out, depth);
    else if (field === 5) tensor(buf, v, out);
    else if (field === 15) sparse(buf, v, out);
  }
}

/**
 * Every external-data reference of the serialized ModelProto `model` (in graph order).
 * @param {Uint8Array} model
 * @param {string} where
 * @returns {ExternalRef[]}
 */
export function externalRefs(model, where) {
  /** @type {ExternalRef[]} */
  const out = [];
  try {
    for (const [field, wire, v] of fields(model, 0, model.length)) {
      if (wire !== 2) continue;
      if (field === 7) graph(model, v, out, 0);
      else if (field === 25) {
        for (const [f2, w2, v2] of fields(model, v[0], v[1])) if (f2 === 7 && w2 === 2) node(model, v2, out, 0);
      }
    }
  } catch (e) {
    if (!(e instanceof Malformed)) throw e;
    throw new PackageError(`${where} is not a well-formed ONNX model (${e.message})`, 'the package is damaged; re-copy or re-export it');
  }
  return out;
}

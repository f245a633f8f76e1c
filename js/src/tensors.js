/**
 * The small tensors of a graph under admission (mirrors `_tensor_meta`, `_to_array` and the folding of
 * `runtime/admission.py`): what an initializer or `Constant` holds, read from its TensorProto without
 * reading external data, and NumPy's semantics for the small integer tensors of shape arithmetic
 * (`Shape` -> `Gather` -> `Concat` -> `Reshape`), which shapes.js folds as the Python runtime does.
 *
 * Element counts are BigInt; folded integers are BigInt wrapped to their dtype's width (as NumPy's
 * arrays wrap), folded floats numbers (float32 rounded with `Math.fround`).
 *
 *   TensorProto dims = 1, data_type = 2, float_data = 4, int32_data = 5, int64_data = 7, name = 8,
 *   raw_data = 9, double_data = 10, external_data = 13, data_location = 14.
 */

import { repr } from './errors.js';
import { bound } from './limits.js';
import { Malformed, externalRef, fields, text, varint64 } from './onnx_refs.js';

/** Why a graph is not admitted (admission.js turns it into one PackageError naming the graph). */
export class Refused extends Error {}

/** ONNX TensorProto element types by number, as the manifest (and NumPy) names them. */
export const ELEM = /** @type {Record<number, string>} */ ({
  1: 'float32', 2: 'uint8', 3: 'int8', 5: 'int16', 6: 'int32', 7: 'int64', 9: 'bool', 10: 'float16', 11: 'float64', 16: 'bfloat16',
});
/** Bytes per element of the types NumPy holds (bfloat16: none, so its external length is not checked). */
export const ITEMSIZE = /** @type {Record<string, number>} */ ({
  float32: 4, uint8: 1, int8: 1, int16: 2, int32: 4, int64: 8, bool: 1, float16: 2, float64: 8,
});
/** The most elements a folded value holds. */
export const FOLDED = () => BigInt(bound('graph.folded_elements'));

/**
 * @typedef {{ dtype: string, shape: bigint[], data: (bigint | number)[] }} Folded a small tensor's values in C order:
 *   integers and bools as BigInt, floats as numbers
 */

/** @param {bigint[]} shape */
export const count = (shape) => shape.reduce((a, b) => a * b, 1n);
/** @param {number} n */
export const range = (n) => Array.from({ length: n }, (_, i) => i);

/** @param {bigint[][]} shapes @returns {bigint[]} */
export function broadcast(shapes) {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out = [];
  for (let i = 0; i < rank; i++) {
    const dims = new Set(shapes.filter((s) => s.length - rank + i >= 0).map((s) => s[s.length - rank + i]).filter((d) => d !== 1n));
    if (dims.size > 1) throw new Refused(`shapes ${repr(shapes)} do not broadcast`);
    out.push(dims.size ? [...dims][0] : 1n);
  }
  return out;
}

// --- tensors --------------------------------------------------------------------------------------

/**
 * The fields of a TensorProto that admission reads; the typed value fields (float_data = 4, int32_data = 5,
 * int64_data = 7, double_data = 10) as their occurrences `[wire, value, at]`, decoded only when folded.
 * @typedef {{ name: string, dims: bigint[], dataType: number, raw: number[] | null, typed: Map<number, [number, any, number][]>,
 *   external: boolean, entries: Map<string, string> }} TensorMsg
 */

/** Wire type and width of each typed value field (0: a varint). */
const TYPED = /** @type {Record<number, [number, number]>} */ ({ 4: [5, 4], 5: [0, 0], 7: [0, 0], 10: [1, 8] });

/**
 * A TensorProto from the span of each occurrence (one for an initializer; a tensor attribute given twice is
 * one tensor, merged as protobuf merges: repeated fields joined, the last scalar kept).
 * @param {Uint8Array} buf @param {number[][]} spans @returns {TensorMsg}
 */
export function parseTensor(buf, spans) {
  /** @type {TensorMsg} */
  const t = { name: '', dims: [], dataType: 0, raw: null, typed: new Map(), external: false, entries: new Map() };
  for (const [f, w, v, at] of spans.flatMap((span) => [...fields(buf, span[0], span[1])])) {
    if (f === 1) ints(buf, w, v, at, t.dims);
    else if (f === 2 && w === 0) t.dataType = v;
    else if (f in TYPED && (w === 2 || w === TYPED[f][0])) {
      if (w === 2) occurrences(buf, v, TYPED[f][1]);  // a malformed packed run fails the parse, as protobuf's does
      const seen = t.typed.get(f) ?? [];
      seen.push([w, v, at]);
      t.typed.set(f, seen);
    } else if (f === 8 && w === 2) t.name = text(buf, v);
    else if (f === 9 && w === 2) t.raw = v;
    else if (f === 14 && w === 0) t.external = v === 1;
    else if (f === 13 && w === 2) {
      let key = '';
      let value = '';
      for (const [f2, w2, v2] of fields(buf, v[0], v[1])) {
        if (f2 === 1 && w2 === 2) key = text(buf, v2);
        else if (f2 === 2 && w2 === 2) value = text(buf, v2);
      }
      t.entries.set(key, value);
    }
  }
  return t;
}

/** How many values a packed run `span` holds (`size` bytes each; 0: varints). @param {Uint8Array} buf @param {number[]} span @param {number} size */
function occurrences(buf, span, size) {
  if (size) {
    if ((span[1] - span[0]) % size) throw new Malformed('a packed field of fixed-width values has a partial value');
    return (span[1] - span[0]) / size;
  }
  let n = 0;
  let run = 0;
  for (let p = span[0]; p < span[1]; p++) {
    if (buf[p] & 0x80) {
      if (++run > 9) throw new Malformed('truncated varint');
    } else {
      n++;
      run = 0;
    }
  }
  if (run) throw new Malformed('truncated varint');
  return n;
}

/** A repeated int64 field, one varint or packed. @param {Uint8Array} buf @param {number} w @param {any} v @param {number} at @param {bigint[]} out */
export function ints(buf, w, v, at, out) {
  if (w === 0) out.push(varint64(buf, at, buf.length)[0]);
  else if (w === 2) for (let p = v[0]; p < v[1];) { const [x, next] = varint64(buf, p, v[1]); out.push(x); p = next; }
}

/**
 * A repeated float (4) or double (8) field, one value or packed.
 * @param {DataView} view @param {number} w @param {any} v @param {number} at @param {number} size @param {number[]} out
 */
export function fixed(view, w, v, at, size, out) {
  const read = (/** @type {number} */ p) => (size === 4 ? view.getFloat32(p, true) : view.getFloat64(p, true));
  if (w === (size === 4 ? 5 : 1)) out.push(read(at));
  else if (w === 2) {
    if ((v[1] - v[0]) % size) throw new Malformed('a packed field of fixed-width values has a partial value');
    for (let p = v[0]; p < v[1]; p += size) out.push(read(p));
  }
}

/**
 * `[shape, value or null]` of an initializer or Constant tensor (`_tensor_meta`): external data has its
 * dimensions without being read; an inline tensor is folded only when small and of a NumPy type.
 * @param {Uint8Array} buf @param {TensorMsg} t @param {string} what
 * @returns {[bigint[], Folded | null]}
 */
export function tensorMeta(buf, t, what) {
  const dims = t.dims;
  if (dims.length > bound('tensor_rank') || dims.some((d) => d < 0n)) throw new Refused(`${what} has shape ${repr(dims.slice(0, 10))}`);
  const n = count(dims);
  const elem = ELEM[t.dataType];
  if (elem === undefined) throw new Refused(`${what} has element type ${t.dataType}, not one taskfold writes`);
  if (t.external || t.entries.size) {
    let ext;
    try {
      ext = externalRef(t.name, t.entries);
    } catch (e) {
      if (e instanceof Malformed) throw new Refused(e.message);
      throw e;
    }
    const size = elem in ITEMSIZE ? n * BigInt(ITEMSIZE[elem]) : null;
    if (ext.length !== null && size !== null && BigInt(ext.length) !== size) {
      throw new Refused(`${what}: external length ${ext.length} differs from its shape x type (${size} bytes)`);
    }
    return [dims, null];
  }
  if (n > BigInt(bound('graph.constant_elements'))) {
    throw new Refused(`${what} holds ${n} elements inline, more than ${bound('graph.constant_elements')}`);
  }
  if (n > FOLDED() || !(elem in ITEMSIZE) || elem === 'float16') return [dims, null];
  return [dims, { dtype: elem, shape: dims, data: values(buf, t, elem, Number(n)) }];
}

/**
 * The values of an inline tensor (raw_data or the typed repeated field), `_to_array`.
 * @param {Uint8Array} buf @param {TensorMsg} t @param {string} elem @param {number} n
 */
function values(buf, t, elem, n) {
  if (t.raw && t.raw[1] > t.raw[0]) {
    const size = ITEMSIZE[elem];
    if (t.raw[1] - t.raw[0] !== n * size) throw new Refused(`tensor ${repr(t.name)}: ${t.raw[1] - t.raw[0]} bytes of data for shape ${repr(t.dims)}`);
    const view = new DataView(buf.buffer, buf.byteOffset + t.raw[0], n * size);
    const read = {
      float32: (/** @type {number} */ i) => view.getFloat32(4 * i, true), float64: (/** @type {number} */ i) => view.getFloat64(8 * i, true),
      int64: (/** @type {number} */ i) => view.getBigInt64(8 * i, true), int32: (/** @type {number} */ i) => BigInt(view.getInt32(4 * i, true)),
      int16: (/** @type {number} */ i) => BigInt(view.getInt16(2 * i, true)), int8: (/** @type {number} */ i) => BigInt(view.getInt8(i)),
      uint8: (/** @type {number} */ i) => BigInt(view.getUint8(i)), bool: (/** @type {number} */ i) => (view.getUint8(i) ? 1n : 0n),
    }[elem];
    return range(n).map((i) => /** @type {(i: number) => bigint | number} */ (read)(i));
  }
  const f = elem === 'float32' ? 4 : elem === 'float64' ? 10 : elem === 'int64' ? 7 : 5;
  const found = t.typed.get(f) ?? [];
  const got = found.reduce((k, [w, v]) => k + (w === 2 ? occurrences(buf, v, TYPED[f][1]) : 1), 0);
  if (got !== n) throw new Refused(`tensor ${repr(t.name)}: ${got} values for shape ${repr(t.dims)}`);
  /** @type {(bigint | number)[]} */
  const field = [];
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (const [w, v, at] of found) {
    if (f === 4 || f === 10) fixed(view, w, v, at, TYPED[f][1], /** @type {number[]} */ (field));
    else ints(buf, w, v, at, /** @type {bigint[]} */ (field));
  }
  return field.map((x) => cast(f === 5 ? BigInt.asIntN(32, /** @type {bigint} */ (x)) : x, elem));
}

// --- folded values: NumPy's semantics for the small tensors of shape arithmetic --------------------

const SIGNED = /** @type {Record<string, number>} */ ({ int8: 8, int16: 16, int32: 32, int64: 64 });
/** @param {string} d */
const isFloat = (d) => d === 'float32' || d === 'float64';
/** @param {string} d */
const isInt = (d) => d in SIGNED || d === 'uint8';

/** NumPy's result type of two arrays' dtypes. @param {string} a @param {string} b @returns {string} */
function promote(a, b) {
  if (a === b || b === 'bool') return a;
  if (a === 'bool') return b;
  if (isFloat(a) && isFloat(b)) return 'float64';
  if (isFloat(a) || isFloat(b)) {
    const [f, i] = isFloat(a) ? [a, b] : [b, a];
    return f === 'float64' || i === 'int32' || i === 'int64' ? 'float64' : 'float32';
  }
  if (a === 'uint8' || b === 'uint8') {
    const other = a === 'uint8' ? b : a;
    return other === 'int8' ? 'int16' : other;
  }
  return SIGNED[a] > SIGNED[b] ? a : b;
}

/**
 * One value converted to `dtype` as NumPy's `astype` does: integers wrap; floats truncate, and one
 * past the target's range (or not finite) becomes the x86 conversion's "integer indefinite" (the
 * lowest int64 for int64, else the lowest int32, wrapped to the narrower type).
 * @param {bigint | number} x @param {string} dtype @returns {bigint | number}
 */
function cast(x, dtype) {
  if (dtype === 'bool') return (typeof x === 'bigint' ? x !== 0n : x !== 0) ? 1n : 0n;
  if (isFloat(dtype)) return dtype === 'float32' ? Math.fround(Number(x)) : Number(x);
  let i;
  if (typeof x === 'bigint') i = x;
  else {
    const bits = dtype === 'int64' ? 63 : 31;
    i = Number.isFinite(x) && Math.abs(Math.trunc(x)) < 2 ** bits ? BigInt(Math.trunc(x)) : -(1n << BigInt(bits));
  }
  return dtype === 'uint8' ? BigInt.asUintN(8, i) : BigInt.asIntN(SIGNED[dtype], i);
}

/** @param {Folded} v @param {string} dtype @returns {Folded} */
export const astype = (v, dtype) => ({ dtype, shape: v.shape, data: v.data.map((x) => cast(x, dtype)) });

/** `v`'s values laid out over `shape` (NumPy's broadcast_to; the shapes broadcast). @param {Folded} v @param {bigint[]} shape */
export function spread(v, shape) {
  const out = shape.map(Number);
  const own = v.shape.map(Number);
  const off = out.length - own.length;
  const strides = own.map(() => 0);
  for (let i = own.length - 1, s = 1; i >= 0; s *= own[i], i--) strides[i] = own[i] === 1 ? 0 : s;
  const idx = out.map(() => 0);
  const data = [];
  for (let k = Number(count(shape)); k > 0; k--) {
    let p = 0;
    for (let i = 0; i < own.length; i++) p += idx[off + i] * strides[i];
    data.push(v.data[p]);
    for (let i = out.length - 1; i >= 0 && ++idx[i] === out[i]; i--) idx[i] = 0;
  }
  return data;
}

/**
 * `fn` element by element over `vs` broadcast together, each value first converted to `dtype`.
 * @param {Folded[]} vs (one to three) @param {string} dtype @param {string} outType
 * @param {(x: any, y: any, z: any) => bigint | number | boolean} fn
 * @returns {Folded}
 */
function elementwise(vs, dtype, outType, fn) {
  const shape = broadcast(vs.map((v) => v.shape));
  const cols = vs.map((v) => {
    const data = v.shape.join() === shape.join() ? v.data : spread(v, shape);
    return v.dtype === dtype ? data : data.map((x) => cast(x, dtype));
  });
  const [a, b, c] = cols;
  const data = a.map((x, k) => {
    const r = fn(x, b?.[k], c?.[k]);
    return typeof r === 'boolean' ? (r ? 1n : 0n) : cast(r, outType);
  });
  return { dtype: outType, shape, data };
}

/** @param {bigint | number} x */
const truthy = (x) => x !== 0n && x !== 0;
/** @param {bigint | number} x */
const negative = (x) => x < 0;

/** Python's floor division of two BigInts. @param {bigint} a @param {bigint} b */
export function floorDiv(a, b) {
  const q = a / b;
  return (a % b !== 0n) && ((a < 0n) !== (b < 0n)) ? q - 1n : q;
}

/** Python's (and NumPy's `mod`) remainder, of the divisor's sign. @param {bigint | number} a @param {bigint | number} b */
function pyMod(a, b) {
  const r = typeof a === 'bigint' ? a % /** @type {bigint} */ (b) : a % /** @type {number} */ (b);
  return truthy(r) && negative(r) !== negative(b) ? /** @type {any} */ (r) + b : r;
}

/**
 * A binary node's folded value (`_BINARY` of `_Graph._rule`), or null.
 * @param {string} op @param {string} name the node's @param {Folded[]} val @param {boolean} fmod Mod's attribute
 */
export function foldBinary(op, name, val, fmod) {
  const [a, b] = val;
  const dt = promote(a.dtype, b.dtype);
  if (op === 'Where') {
    if (val.length < 3) throw new Refused(`Where node ${repr(name)} has ${val.length} inputs`);
    const t = promote(b.dtype, val[2].dtype);
    return elementwise([astype(a, 'bool'), astype(b, t), astype(val[2], t)], t, t, (c, x, y) => (c ? x : y));
  }
  if ((op === 'Div' || op === 'Mod') && isInt(a.dtype)) {
    if (b.data.some((x) => !truthy(x))) throw new Refused(`${op} node ${repr(name)} divides by a constant zero`);
    if (op === 'Div') {  // ONNX integer division truncates toward zero
      // |x| in x's own dtype, as NumPy's abs: |-128| is -128 in int8
      const abs = (/** @type {Folded} */ t) => ({ ...t, data: t.data.map((x) => cast(x < 0 ? -x : x, t.dtype)) });
      const q = elementwise([abs(a), abs(b)], dt, dt, (x, y) => (typeof x === 'bigint' ? floorDiv(x, y) : Math.floor(x / y)));
      const neg = elementwise([a, b], dt, 'bool', (x, y) => negative(x) !== negative(y));
      return elementwise([neg, q], dt, dt, (n, x) => (n ? -x : x));
    }
    return elementwise([a, b], dt, dt, fmod ? (x, y) => x % y : pyMod);
  }
  if (op === 'Div') {
    const t = isFloat(dt) ? dt : 'float64';
    return elementwise([a, b], t, t, (x, y) => x / y);
  }
  if (op === 'Sub' && dt === 'bool') throw new Refused(`Sub node ${repr(name)} subtracts bool constants`);
  const fns = /** @type {Record<string, [string, (x: any, y: any) => any]>} */ ({
    Add: [dt, dt === 'bool' ? (x, y) => x || y : (x, y) => x + y], Sub: [dt, (x, y) => x - y],
    Mul: [dt, dt === 'bool' ? (x, y) => x && y : (x, y) => x * y], Equal: ['bool', (x, y) => x === y],
    Less: ['bool', (x, y) => x < y], GreaterOrEqual: ['bool', (x, y) => x >= y],
    And: ['bool', (x, y) => truthy(x) && truthy(y)],
  });
  if (!(op in fns)) return null;  // Pow, BiasGelu: never shape arithmetic
  const [outType, fn] = fns[op];
  return elementwise([a, b], dt, outType, fn);
}

/**
 * A unary node's folded value (Cast, Floor, Neg, Identity, Clip), or null.
 * @param {string} op @param {string} name the node's @param {string[]} ins its inputs @param {(Folded | null)[]} val
 * @param {string | undefined} to Cast's element type
 */
export function foldUnary(op, name, ins, val, to) {
  const v = /** @type {Folded} */ (val[0]);
  if (op === 'Identity') return v;
  if (op === 'Cast') {
    return to !== undefined && to in ITEMSIZE && to !== 'float16' ? astype(v, to) : null;
  }
  if (op === 'Floor') return isFloat(v.dtype) ? { ...v, data: v.data.map((x) => Math.floor(Number(x))) } : v;
  if (op === 'Neg') {
    if (v.dtype === 'bool') throw new Refused(`Neg node ${repr(name)} negates a bool constant`);
    return { ...v, data: v.data.map((x) => cast(-x, v.dtype)) };
  }
  const lo = val[1] ?? null;
  const hi = val[2] ?? null;
  if ((ins.length >= 2 && ins[1] && lo === null) || (ins.length >= 3 && ins[2] && hi === null)) return null;
  const bounds = /** @type {Folded[]} */ ([lo, hi].filter((x) => x !== null));
  if (v.dtype === 'bool' && !bounds.length) throw new Refused(`Clip node ${repr(name)} clips a bool constant without bounds`);
  const dt = bounds.reduce((d, x) => promote(d, x.dtype), v.dtype);
  const shape = broadcast([v.shape, ...bounds.map((x) => x.shape)]);  // NumPy's clip broadcasts; set() reshapes to x's
  if (count(shape) !== count(v.shape)) throw new Refused(`Clip node ${repr(name)} has bounds of another shape`);  // (Python: a ValueError)
  const [x0, l, h] = [v, lo, hi].map((x) => (x === null ? null : spread(x, shape).map((y) => cast(y, dt))));
  return { dtype: dt, shape, data: /** @type {(bigint | number)[]} */ (x0).map((x, k) => {
    let y = x;
    if (l !== null && y < l[k]) y = l[k];
    if (h !== null && y > h[k]) y = h[k];
    return y;
  }) };
}

/** `v` with each axis indexed by a list (NumPy's `v[np.ix_(*lists)]`). @param {Folded} v @param {number[][]} lists @returns {Folded} */
export function pick(v, lists) {
  const dims = v.shape.map(Number);
  const strides = dims.map((_, i) => dims.slice(i + 1).reduce((a, b) => a * b, 1));
  let offsets = [0];
  lists.forEach((list, i) => { offsets = offsets.flatMap((o) => list.map((j) => o + j * strides[i])); });
  return { dtype: v.dtype, shape: lists.map((l) => BigInt(l.length)), data: offsets.map((o) => v.data[o]) };
}

/** @param {Folded} v @param {number[]} perm @returns {Folded} */
export function transpose(v, perm) {
  if (count(v.shape) === 0n) return { dtype: v.dtype, shape: perm.map((p) => v.shape[p]), data: [] };
  const dims = v.shape.map(Number);
  const strides = dims.map((_, i) => dims.slice(i + 1).reduce((a, b) => a * b, 1));
  let offsets = [0];
  for (const p of perm) offsets = offsets.flatMap((o) => range(dims[p]).map((j) => o + j * strides[p]));
  return { dtype: v.dtype, shape: perm.map((p) => v.shape[p]), data: offsets.map((o) => v.data[o]) };
}

/** @param {Folded[]} vs @param {number} ax @returns {Folded} */
export function concat(vs, ax) {
  const dt = vs.map((v) => v.dtype).reduce(promote);
  if (vs.every((v) => count(v.shape) === 0n)) return { dtype: dt, shape: [], data: [] };  // (shape: the rule's)
  const outer = Number(count(vs[0].shape.slice(0, ax)));
  const data = [];
  for (let o = 0; o < outer; o++) {
    for (const v of vs) {
      const chunk = Number(count(v.shape.slice(ax)));
      data.push(...v.data.slice(o * chunk, (o + 1) * chunk).map((x) => cast(x, dt)));
    }
  }
  const shape = [...vs[0].shape];
  shape[ax] = vs.reduce((s, v) => s + v.shape[ax], 0n);
  return { dtype: dt, shape, data };
}


/**
 * Every value's shape in a graph under admission (mirrors `_Graph` of `runtime/admission.py`, rule for
 * rule and word for word): shapes are propagated from the declared inputs and the initializers
 * through every node in file order with the operator's own shape rule, small integer tensors (shape
 * arithmetic) are folded with NumPy's semantics (tensors.js), and each value must hold at most `cap`
 * elements, all of them together at most 16 x that. A node whose output size cannot be bounded is
 * refused, so an `Expand`, `ConstantOfShape`, `Resize` or `Reshape` sized by a crafted constant never
 * runs. Dimensions and element counts are BigInt: products cannot overflow.
 */

import { pyFloat, repr } from './errors.js';
import { bound } from './limits.js';
import {
  ELEM, FOLDED, ITEMSIZE, Refused, astype, broadcast, concat, count, floorDiv, foldBinary, foldUnary, parseTensor, pick, range,
  spread, tensorMeta, transpose,
} from './tensors.js';

/**
 * @typedef {import('./tensors.js').Folded} Folded
 * @typedef {bigint | number | string | bigint[] | number[] | { tensor: number[][] }} Attr an attribute's value (a tensor: the
 *   spans of its occurrences)
 * @typedef {{ name: string, op: string, inputs: string[], outputs: string[], attrs: Map<string, Attr> }} Node
 */

/**
 * The largest number of elements one value of an admitted graph may hold (`value_cap` of
 * `runtime/admission.py`): 64 x batch x tokens² covers attention scores at the declared latent size;
 * at least 2**24, at most the limits' `graph.value_elements`.
 * @param {number} batch @param {number} latentH @param {number} latentW
 */
export function valueCap(batch, latentH, latentW) {
  const tokens = BigInt(latentH) * BigInt(latentW);
  const want = 64n * BigInt(batch) * tokens * tokens;
  return Number([BigInt(bound('graph.value_elements')), want > 1n << 24n ? want : 1n << 24n].reduce((a, b) => (a < b ? a : b)));
}

const INT64_MAX = (1n << 63n) - 1n;

/** Python's repr of a list of floats. @param {number[]} xs */
const floats = (xs) => `[${xs.map((x) => (Object.is(x, -0) ? '-0.0' : pyFloat(x))).join(', ')}]`;

// --- shape rules ----------------------------------------------------------------------------------

/** @param {bigint} axis @param {number} rank */
function axisOf(axis, rank) {
  if (!(-BigInt(rank) <= axis && axis < BigInt(Math.max(rank, 1)))) throw new Refused(`axis ${axis} outside rank ${rank}`);
  return rank ? Number(((axis % BigInt(rank)) + BigInt(rank)) % BigInt(rank)) : 0;
}

/** A folded value as Python ints (`_ints`). @param {Folded | null | undefined} value @param {string} what @returns {bigint[]} */
function intsOf(value, what) {
  if (!value) throw new Refused(`${what} is not a constant the admission can read`);
  return value.data.map((x) => {
    if (typeof x === 'bigint') return x;
    if (!Number.isFinite(x)) throw new Refused(`${what} holds ${pyFloat(x)}`);
    return BigInt(Math.trunc(x));
  });
}

/** @param {Node} node @param {string} key @param {bigint} dflt */
function attrInt(node, key, dflt) {
  const v = node.attrs.get(key);
  if (v === undefined) return dflt;
  if (typeof v !== 'bigint') throw new Refused(`node ${repr(node.name)}'s attribute ${repr(key)} is not an integer`);
  return v;
}

/** @param {Node} node @param {string} key @param {bigint[]} dflt @returns {bigint[]} */
function attrInts(node, key, dflt) {
  const v = node.attrs.get(key);
  if (v === undefined) return dflt;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'bigint')) {
    throw new Refused(`node ${repr(node.name)}'s attribute ${repr(key)} is not a list of integers`);
  }
  return /** @type {bigint[]} */ (v);
}

/** @param {Node} node @param {string} key @param {string} dflt */
function attrStr(node, key, dflt) {
  const v = node.attrs.get(key);
  if (v === undefined) return dflt;
  if (typeof v !== 'string') throw new Refused(`node ${repr(node.name)}'s attribute ${repr(key)} is not a string`);
  return v;
}

/** @param {bigint[]} x @param {bigint[]} w @param {Node} node */
function conv(x, w, node) {
  if (!['NOTSET', ''].includes(attrStr(node, 'auto_pad', 'NOTSET'))) throw new Refused('Conv with auto_pad');
  const k = x.length - 2;
  if (k < 1 || w.length !== x.length) throw new Refused(`Conv of shapes ${repr(x)} and ${repr(w)}`);
  const strides = attrInts(node, 'strides', Array(k).fill(1n));
  const dil = attrInts(node, 'dilations', Array(k).fill(1n));
  const pads = attrInts(node, 'pads', Array(2 * k).fill(0n));
  if (strides.length !== k || dil.length !== k || pads.length !== 2 * k || [...strides, ...dil].some((d) => d < 1n) || pads.some((p) => p < 0n)) {
    throw new Refused('Conv attributes');
  }
  const spatial = range(k).map((i) => floorDiv(x[2 + i] + pads[i] + pads[k + i] - dil[i] * (w[2 + i] - 1n) - 1n, strides[i]) + 1n);
  if (spatial.some((d) => d < 1n)) throw new Refused(`Conv output ${repr(spatial)}`);
  return [x[0], w[0], ...spatial];
}

/** @param {bigint[]} a @param {bigint[]} b */
function matmul(a, b) {
  if (a.length < 1 || b.length < 1) throw new Refused('MatMul of a scalar');
  const a2 = a.length === 1 ? [1n, ...a] : a;
  const b2 = b.length === 1 ? [...b, 1n] : b;
  if (a2[a2.length - 1] !== b2[b2.length - 2]) throw new Refused(`MatMul of shapes ${repr(a)} and ${repr(b)}`);
  const out = [...broadcast([a2.slice(0, -2), b2.slice(0, -2)]), a2[a2.length - 2], b2[b2.length - 1]];
  if (a.length === 1) out.splice(out.length - 2, 1);
  if (b.length === 1) out.pop();
  return out;
}

/** @param {bigint[]} x @param {bigint[]} target @param {boolean} allowzero */
function reshape(x, target, allowzero) {
  const out = [];
  let unknown = -1;
  for (let [i, d] of target.entries()) {
    if (d === 0n && !allowzero) {
      if (i >= x.length) throw new Refused('Reshape copies a dimension the input lacks');
      d = x[i];
    }
    if (d === -1n) {
      if (unknown >= 0) throw new Refused('Reshape with two -1');
      unknown = i;
      d = 1n;
    } else if (d < 0n) throw new Refused(`Reshape to ${repr(target)}`);
    out.push(d);
  }
  const n = count(x);
  const m = count(out);
  if (unknown >= 0) {
    if (m === 0n || n % m) throw new Refused(`Reshape of ${repr(x)} to ${repr(target)}`);
    out[unknown] = n / m;
  } else if (n !== m) throw new Refused(`Reshape of ${repr(x)} (${n} elements) to ${repr(target)}`);
  return out;
}

/**
 * Python's `range(*slice(start, stop, step).indices(length))` as its start, step and length.
 * @param {bigint} start @param {bigint} stop @param {bigint} step @param {bigint} length
 */
function sliceRange(start, stop, step, length) {
  const [lower, upper] = step > 0n ? [0n, length] : [-1n, length - 1n];
  const clamp = (/** @type {bigint} */ i) => {
    const j = i < 0n ? i + length : i;
    return j < lower ? lower : j > upper ? upper : j;
  };
  const [s, e] = [clamp(start), clamp(stop)];
  const n = step > 0n ? (e - s + step - 1n) / step : (s - e - step - 1n) / -step;
  return { start: s, step, n: n > 0n ? n : 0n };
}

/**
 * The output shape of a Slice and the range it takes on each sliced axis (`_slice`).
 * @param {bigint[]} x @param {bigint[]} starts @param {bigint[]} ends @param {bigint[] | null} axes @param {bigint[] | null} steps
 */
function slice(x, starts, ends, axes, steps) {
  const ax = axes ?? range(starts.length).map(BigInt);
  const st = steps ?? starts.map(() => 1n);
  if (!(starts.length === ends.length && ends.length === ax.length && ax.length === st.length)) {
    throw new Refused('Slice arguments of different lengths');
  }
  const out = [...x];
  /** @type {(ReturnType<typeof sliceRange> | null)[]} */
  const index = x.map(() => null);
  const big = 1n << 62n;
  const clip = (/** @type {bigint} */ v) => (v > big ? big : v < -big ? -big : v);
  starts.forEach((s, i) => {
    const a = axisOf(ax[i], x.length);
    if (st[i] === 0n) throw new Refused('Slice with step 0');
    if (!x.length) throw new Refused('Slice of a scalar');  // (Python: an IndexError)
    index[a] = sliceRange(clip(s), clip(ends[i]), st[i], x[a]);
    out[a] = index[a].n;
  });
  return { out, index };
}

// --- the graph ------------------------------------------------------------------------------------

const UNARY = new Set(['Cast', 'Clip', 'Cos', 'Erf', 'Floor', 'Identity', 'Neg', 'Sigmoid', 'Sin', 'Softmax', 'Sqrt', 'Tanh',
  'Trilu', 'InstanceNormalization', 'LayerNormalization', 'Gelu', 'FastGelu', 'QuickGelu']);
const BINARY = new Set(['Add', 'And', 'Div', 'Equal', 'Less', 'GreaterOrEqual', 'Mod', 'Mul', 'Pow', 'Sub', 'BiasGelu', 'Where']);
const FOLDS = new Set(['Cast', 'Floor', 'Neg', 'Identity', 'Clip']);

/** Shape (and small-value) propagation through one graph, node by node in file order (`_Graph`). */
export class Graph {
  /** @param {Uint8Array} buf the serialized model (tensor attributes are spans of it) @param {number} cap {@link valueCap} */
  constructor(buf, cap) {
    this.buf = buf;
    /** @type {Map<string, bigint[]>} */
    this.shapes = new Map();
    /** @type {Map<string, Folded>} */
    this.values = new Map();
    this.cap = BigInt(cap);
    this.total = 0n;
    this.largest = 0n;
  }

  /** @param {string} name @param {Node} node */
  shape(name, node) {
    const s = this.shapes.get(name);
    if (s === undefined) throw new Refused(`node ${repr(node.name || node.op)} reads ${repr(name)}, which nothing before it produces`);
    return s;
  }

  /** @param {string} name @param {bigint[]} shape @param {Folded | null} [value] @param {boolean} [counted] */
  set(name, shape, value = null, counted = true) {
    if (shape.length > bound('tensor_rank') || shape.some((d) => d < 0n)) {
      throw new Refused(`value ${repr(name)} would have shape ${repr(shape.slice(0, 10))}`);
    }
    const n = count(shape);
    if (n > this.cap) {
      throw new Refused(`value ${repr(name)} would hold ${n} elements (shape ${repr(shape.slice(0, 10))}), more than the ${this.cap} `
        + 'a graph of this package\'s size may');
    }
    if (counted) {
      this.total += n;
      if (n > this.largest) this.largest = n;
      if (this.total > 16n * this.cap) throw new Refused(`the graph's values would hold more than ${16n * this.cap} elements in all`);
    }
    this.shapes.set(name, [...shape]);
    if (value !== null && n <= FOLDED()) {
      const nonzero = count(shape.filter((d) => d !== 0n)) * BigInt(ITEMSIZE[value.dtype]);
      if (shape.some((d) => d > INT64_MAX) || nonzero > INT64_MAX) {  // NumPy cannot shape it (Python: a ValueError)
        throw new Refused(`value ${repr(name)} would have shape ${repr(shape.slice(0, 10))}, past what NumPy can hold`);
      }
      if (BigInt(value.data.length) !== n) throw new Refused(`value ${repr(name)}: ${value.data.length} folded values for shape ${repr(shape)}`);
      this.values.set(name, { ...value, shape: [...shape] });
    }
  }

  /** Propagate one node's shapes to its outputs. @param {Node} node */
  run(node) {
    const { op, inputs: ins, outputs: outs } = node;
    const shp = ins.map((i) => (i ? this.shape(i, node) : null));
    const val = ins.map((i) => (i ? this.values.get(i) ?? null : null));
    const [out, value] = this.rule(node, shp, val);
    if (op === 'SkipLayerNormalization') {  // (output, mean, inv_std_var, input_skip_bias_sum)
      const extra = [out, [...out.slice(0, -1), 1n], [...out.slice(0, -1), 1n], out];
      if (outs.length > extra.length) throw new Refused(`${op} node ${repr(node.name)} has ${outs.length} outputs`);
      outs.forEach((o, i) => { if (o) this.set(o, extra[i]); });
      return;
    }
    if (op === 'LayerNormalization') {  // (Y, Mean, InvStdDev)
      const axis = axisOf(attrInt(node, 'axis', -1n), out.length);
      outs.forEach((o, i) => { if (o) this.set(o, i === 0 ? out : [...out.slice(0, axis), ...Array(out.length - axis).fill(1n)]); });
      return;
    }
    if (outs.filter((o) => o).length !== 1 || !outs[0]) throw new Refused(`${op} node ${repr(node.name)} has ${outs.length} outputs`);
    this.set(outs[0], out, value);
  }

  /**
   * The operator's shape rule: `[output shape, folded value or null]`.
   * @param {Node} node @param {(bigint[] | null)[]} shp @param {(Folded | null)[]} val
   * @returns {[bigint[], Folded | null]}
   */
  rule(node, shp, val) {
    const { op, name, inputs: ins } = node;
    const input = (/** @type {number} */ i) => {
      const s = shp[i];
      if (!s) throw new Refused(`${op} node ${repr(name)} lacks its input ${i}`);
      return s;
    };
    const v = (/** @type {number} */ i) => val[i] ?? null;
    const given = (/** @type {number} */ i) => ins.length > i && ins[i] !== '';
    if (op === 'Constant') {
      const t = node.attrs.get('value');
      if (node.attrs.size !== 1 || t === undefined || typeof t !== 'object' || !('tensor' in t)) {
        throw new Refused(`Constant node ${repr(name)} is not a plain tensor constant`);
      }
      return tensorMeta(this.buf, parseTensor(this.buf, t.tensor), `Constant ${repr(name)}`);
    }
    if (UNARY.has(op)) {
      const x = input(0);
      if (v(0) === null || !FOLDS.has(op)) return [x, null];
      return [x, foldUnary(op, name, ins, val, op === 'Cast' ? ELEM[Number(attrInt(node, 'to', -1n))] : undefined)];
    }
    if (BINARY.has(op)) {
      const present = /** @type {bigint[][]} */ (shp.filter((s) => s !== null));
      if (!present.length) throw new Refused(`${op} node ${repr(name)} has no inputs`);
      const out = broadcast(present);
      if (!val.length || val.some((x) => x === null) || count(out) > FOLDED()) return [out, null];
      return [out, foldBinary(op, name, /** @type {Folded[]} */ (val), op === 'Mod' && Boolean(attrInt(node, 'fmod', 0n)))];
    }
    if (op === 'Conv') return [conv(input(0), input(1), node), null];
    if (op === 'MatMul') return [matmul(input(0), input(1)), null];
    if (op === 'Gemm') {
      const [x, w] = [input(0), input(1)];
      if (x.length !== 2 || w.length !== 2) throw new Refused('Gemm of non-matrices');
      const [m, k] = attrInt(node, 'transA', 0n) ? [x[1], x[0]] : [x[0], x[1]];
      const [k2, n] = attrInt(node, 'transB', 0n) ? [w[1], w[0]] : [w[0], w[1]];
      if (k !== k2) throw new Refused(`Gemm of shapes ${repr(x)} and ${repr(w)}`);
      return [[m, n], null];
    }
    if (op === 'Shape') {
      const x = input(0);
      const r = sliceRange(attrInt(node, 'start', 0n), attrInt(node, 'end', BigInt(x.length)), 1n, BigInt(x.length));
      const dims = x.slice(Number(r.start), Number(r.start + r.n));
      if (dims.some((d) => d > INT64_MAX)) throw new Refused(`Shape node ${repr(name)} of ${repr(x)}: past int64`);  // (Python: an OverflowError)
      return [[BigInt(dims.length)], { dtype: 'int64', shape: [BigInt(dims.length)], data: dims }];
    }
    if (op === 'Reshape') {
      const out = reshape(input(0), intsOf(v(1), `Reshape ${repr(name)}'s shape`), Boolean(attrInt(node, 'allowzero', 0n)));
      return [out, v(0) && { ...(/** @type {Folded} */ (v(0))), shape: out }];
    }
    if (op === 'Transpose') {
      const x = input(0);
      const perm = attrInts(node, 'perm', range(x.length).reverse().map(BigInt));
      if ([...perm].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).join() !== range(x.length).join()) {
        throw new Refused(`Transpose perm ${repr(perm)}`);
      }
      const p = perm.map(Number);
      return [p.map((i) => x[i]), v(0) && transpose(/** @type {Folded} */ (v(0)), p)];
    }
    if (op === 'Unsqueeze' || op === 'Squeeze') {
      const x = input(0);
      const axes = given(1) ? intsOf(v(1), `${op} ${repr(name)}'s axes`) : null;
      let out;
      if (op === 'Unsqueeze') {
        if (axes === null) throw new Refused('Unsqueeze without axes');
        const rank = x.length + axes.length;
        out = [...x];
        for (const a of axes.map((i) => axisOf(i, rank)).sort((a, b) => a - b)) out.splice(a, 0, 1n);
      } else {
        const drop = axes !== null ? axes.map((i) => axisOf(i, x.length)) : range(x.length).filter((i) => x[i] === 1n);
        if (drop.some((i) => x[i] !== 1n)) throw new Refused(`Squeeze of a dimension that is not 1 (${repr(x)})`);
        out = x.filter((_, i) => !drop.includes(i));
      }
      return [out, v(0) && { ...(/** @type {Folded} */ (v(0))), shape: out }];
    }
    if (op === 'Concat') {
      const present = /** @type {bigint[][]} */ (shp.filter((s) => s !== null));
      if (!present.length) throw new Refused(`Concat node ${repr(name)} has no inputs`);
      const ax = axisOf(attrInt(node, 'axis', 0n), present[0].length);
      if (!present[0].length || present.some((s) => s.length !== present[0].length || s.some((d, i) => i !== ax && d !== present[0][i]))) {
        throw new Refused(`Concat of shapes ${repr(present)}`);
      }
      const out = [...present[0]];
      out[ax] = present.reduce((a, s) => a + s[ax], 0n);
      return [out, val.every((x) => x !== null) && count(out) <= FOLDED() ? concat(/** @type {Folded[]} */ (val), ax) : null];
    }
    if (op === 'Gather') {
      const [x, idx] = [input(0), input(1)];
      const ax = axisOf(attrInt(node, 'axis', 0n), x.length);
      const out = [...x.slice(0, ax), ...idx, ...x.slice(ax + 1)];
      const [data, indices] = [v(0), v(1)];
      if (!data || !indices) return [out, null];
      if (!x.length) throw new Refused(`Gather node ${repr(name)} indexes a scalar`);
      const i = /** @type {bigint[]} */ (astype(indices, 'int64').data);
      if (i.some((j) => j < -x[ax] || j >= x[ax])) throw new Refused('Gather index out of range');
      if (count(out) === 0n) return [out, { dtype: data.dtype, shape: out, data: [] }];
      if (count(out) > FOLDED()) return [out, null];  // not kept (set() keeps small values only)
      const lists = x.map((d) => range(Number(d)));
      lists[ax] = i.map((j) => Number(j < 0n ? j + x[ax] : j));
      return [out, { ...pick(data, lists), shape: out }];
    }
    if (op === 'Slice') {
      const starts = intsOf(v(1), 'Slice starts');
      const ends = intsOf(v(2), 'Slice ends');
      const axes = given(3) ? intsOf(v(3), 'Slice axes') : null;
      const steps = given(4) ? intsOf(v(4), 'Slice steps') : null;
      const x = input(0);
      const { out, index } = slice(x, starts, ends, axes, steps);
      const data = v(0);
      if (!data) return [out, null];
      if (count(out) === 0n) return [out, { dtype: data.dtype, shape: out, data: [] }];
      const lists = index.map((r, a) => (r === null ? range(Number(x[a]))
        : range(Number(r.n)).map((j) => Number(r.start + BigInt(j) * r.step))));
      return [out, pick(data, lists)];
    }
    if (op === 'ConstantOfShape') {
      const target = intsOf(v(0), `ConstantOfShape ${repr(name)}'s shape`);
      if (target.some((d) => d < 0n)) throw new Refused(`ConstantOfShape to ${repr(target)}`);
      /** @type {Folded} */
      let fill = { dtype: 'int64', shape: [], data: [0n] };
      const t = node.attrs.get('value');
      if (t !== undefined) {
        if (typeof t !== 'object' || !('tensor' in t)) throw new Refused(`ConstantOfShape node ${repr(name)}'s value is not a tensor`);
        const [, fv] = tensorMeta(this.buf, parseTensor(this.buf, t.tensor), `ConstantOfShape ${repr(name)}'s value`);
        if (fv && fv.data.length === 1) fill = fv;
      }
      const n = count(target);
      return [target, n <= FOLDED() ? { dtype: fill.dtype, shape: target, data: Array(Number(n)).fill(fill.data[0]) } : null];
    }
    if (op === 'Expand') {
      const target = intsOf(v(1), `Expand ${repr(name)}'s shape`);
      if (target.some((d) => d < 0n)) throw new Refused(`Expand to ${repr(target)}`);
      const out = broadcast([input(0), target]);
      const data = v(0);
      return [out, data && count(out) <= FOLDED() ? { dtype: data.dtype, shape: out, data: spread(data, out) } : null];
    }
    if (op === 'Resize') {
      const x = input(0);
      let sizes = given(3) ? intsOf(v(3), 'Resize sizes') : null;
      if (sizes === null) {
        const sv = v(2);
        if (ins.length < 3 || sv === null) throw new Refused(`Resize ${repr(name)} has neither constant scales nor sizes`);
        const scales = sv.data.map(Number);
        if (!scales.length || scales.length !== x.length || scales.some((s) => !(s > 0 && s <= 64))) {
          throw new Refused(`Resize scales ${floats(scales)}`);
        }
        sizes = x.map((d, i) => BigInt(Math.floor(Number(d) * scales[i])));
      }
      if (sizes.length !== x.length) throw new Refused(`Resize sizes ${repr(sizes)}`);
      return [sizes, null];
    }
    if (op === 'Pad') {
      const pads = intsOf(v(1), `Pad ${repr(name)}'s pads`);
      const x = input(0);
      if (!['constant', 'reflect', 'edge'].includes(attrStr(node, 'mode', 'constant')) || pads.length !== 2 * x.length || given(3)) {
        throw new Refused(`Pad ${repr(name)}`);
      }
      return [x.map((d, i) => d + pads[i] + pads[x.length + i]), null];
    }
    if (op === 'SkipLayerNormalization') return [broadcast([input(0), input(1)]), null];
    if (op === 'ReduceMean') {
      const x = input(0);
      const raw = given(1) ? intsOf(v(1), 'ReduceMean axes') : attrInts(node, 'axes', range(x.length).map(BigInt));
      const axes = raw.map((i) => axisOf(i, x.length));
      return [attrInt(node, 'keepdims', 1n) ? x.map((d, i) => (axes.includes(i) ? 1n : d)) : x.filter((_, i) => !axes.includes(i)), null];
    }
    if (op === 'Split') throw new Refused('Split is admitted only where the exporter writes it');
    if (op === 'ArgMax') {
      const x = input(0);
      const ax = axisOf(attrInt(node, 'axis', 0n), x.length);
      return [attrInt(node, 'keepdims', 1n) ? x.map((d, i) => (i === ax ? 1n : d)) : x.filter((_, i) => i !== ax), null];
    }
    if (op === 'Flatten') {
      const x = input(0);
      const ax = x.length ? axisOf(attrInt(node, 'axis', 1n), x.length + 1) : 0;
      return [[count(x.slice(0, ax)), count(x.slice(ax))], null];
    }
    throw new Refused(`operator ${op} has no shape rule here`);
  }
}

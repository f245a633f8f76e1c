/**
 * Graph admission (mirrors `runtime/admission.py`): a graph the runtime runs must look like one
 * taskfold's exporter writes before any session sees it —
 *
 * - no model-local functions, no training information, no sparse initializers;
 * - only the opsets of `package_schema.json` imported, and every node's operator in the set the
 *   exporter writes for the graph's kind (`unet`, `text_encoder`, `codec`), from an imported domain;
 * - no attribute that holds a subgraph, refers to a function attribute, or is of a kind the exporter
 *   never writes (so no `Loop`/`If` bodies, no `Scan`);
 * - at most the bounded number of nodes and initializers;
 * - the graph's required inputs and its outputs exactly the manifest's (names, element types, shapes);
 * - **every value has a static shape the admission can compute** (shapes.js), each within
 *   {@link valueCap} elements and all of them together within 16 x that: shapes are propagated from
 *   the declared inputs (named dimensions at the package's sample sizes) and the initializers
 *   (external data sized by its dimensions, never read) through every node with the operator's own
 *   rule, small integer tensors folded as NumPy folds them, and a node whose output size cannot be
 *   bounded is refused — an `Expand` to billions of elements never reaches ONNX Runtime.
 *
 * Every refusal is one PackageError naming the graph, the node and what was expected, in the Python
 * runtime's words.
 */

import { PackageError, repr } from './errors.js';
import { bound, limits, operators } from './limits.js';
import { Malformed, fields, text } from './onnx_refs.js';
import { Graph, valueCap } from './shapes.js';
import { ELEM, Refused, fixed, ints, parseTensor, tensorMeta } from './tensors.js';

export { valueCap };

const HINT = 'the package is damaged; re-copy or re-export it';
const ATTR_GRAPH = new Set([5, 10]);
const ATTR_OTHER = new Set([11, 12, 13, 14, 8, 0]);
const utf8 = new TextDecoder('utf-8');  // attribute strings: undecodable bytes replaced, as Python's decode('utf-8', 'replace')

/**
 * @typedef {{ name: string, elem: number | null, dims: (number | string)[] | null }} ValueInfo
 * @typedef {import('./manifest.js').TensorDoc} TensorDoc
 * @typedef {import('./shapes.js').Attr} Attr
 * @typedef {{ nodes: number, largestValue: number, totalElements: number }} Admitted what admission learned about a
 *   graph: its node count, its largest value and all its values together (elements), as Python's `Admitted`
 */

/** The admission kind of a graph by where the manifest keeps it. @param {string} rel */
export function graphKind(rel) {
  const top = rel.split('/')[0];
  return top === 'text_encoder' || top === 'codec' ? top : 'unet';
}

/** @param {Uint8Array} buf @param {number[]} span @returns {ValueInfo} */
function valueInfo(buf, span) {
  /** @type {ValueInfo} */
  const vi = { name: '', elem: null, dims: null };
  for (const [f, w, v] of fields(buf, span[0], span[1])) {
    if (f === 1 && w === 2) vi.name = text(buf, v);
    else if (f === 2 && w === 2) {
      for (const [f2, w2, v2] of fields(buf, v[0], v[1])) {
        if (f2 !== 1 || w2 !== 2) continue;  // TypeProto.tensor_type
        for (const [f3, w3, v3] of fields(buf, v2[0], v2[1])) {
          if (f3 === 1 && w3 === 0) vi.elem = v3;
          else if (f3 === 2 && w3 === 2) {
            vi.dims ??= [];  // a shape given twice: its dims merged, as protobuf merges
            for (const [f4, w4, v4] of fields(buf, v3[0], v3[1])) {
              if (f4 !== 1 || w4 !== 2) continue;
              let d = /** @type {number | string} */ ('?');
              for (const [f5, w5, v5] of fields(buf, v4[0], v4[1])) {
                if (f5 === 1 && w5 === 0) d = v5;
                else if (f5 === 2 && w5 === 2) d = text(buf, v5) || '?';
              }
              vi.dims.push(d);
            }
          }
        }
      }
    }
  }
  return vi;
}

/** Python's repr of a list of names/dims. @param {any[]} xs */
const list = (xs) => repr(xs);

/**
 * Admit the serialized graph `data` of `kind`, or throw PackageError naming what is not admitted.
 * `dims`: the value of each named dimension at the package's sample size; `cap`: {@link valueCap}.
 * @param {Uint8Array} data
 * @param {{ where: string, kind: string, inputs: TensorDoc[], outputs: TensorDoc[], dims: Record<string, number>,
 *   cap: number, taskTensors?: TensorDoc[] }} spec
 * @returns {Admitted}
 */
export function admitGraph(data, { where, kind, inputs, outputs, dims, cap, taskTensors = [] }) {
  try {
    return admit(data, kind, inputs, outputs, dims, cap, taskTensors);
  } catch (e) {
    if (e instanceof Refused) throw new PackageError(`${where} is not a graph taskfold writes: ${e.message}`, HINT);
    if (e instanceof Malformed) throw new PackageError(`${where} is not a well-formed ONNX model (${e.message})`, HINT);
    throw e;
  }
}

/**
 * @param {Uint8Array} buf
 * @param {string} kind
 * @param {TensorDoc[]} inputs
 * @param {TensorDoc[]} outputs
 * @param {Record<string, number>} dims
 * @param {number} cap
 * @param {TensorDoc[]} taskTensors
 * @returns {Admitted}
 */
function admit(buf, kind, inputs, outputs, dims, cap, taskTensors) {
  let functions = 0;
  let training = 0;
  /** @type {[string, number][]} */
  const opsetImports = [];
  /** @type {number[][]} the graph's occurrences: protobuf merges them into one message, as ONNX Runtime reads it */
  const graphs = [];
  for (const [f, w, v] of fields(buf, 0, buf.length)) {
    if (w !== 2) continue;
    if (f === 25) functions++;
    else if (f === 20) training++;
    else if (f === 7) graphs.push(v);
    else if (f === 8) {
      let domain = '';
      let version = 0;
      for (const [f2, w2, v2] of fields(buf, v[0], v[1])) {
        if (f2 === 1 && w2 === 2) domain = text(buf, v2);
        else if (f2 === 2 && w2 === 0) version = v2;
      }
      opsetImports.push([domain, version]);
    }
  }
  if (functions) throw new Refused(`it defines ${functions} function(s); taskfold writes none`);
  if (training) throw new Refused('it holds training information');
  const allowedSets = /** @type {Record<string, [number, number]>} */ (limits().opsets);
  /** @type {Map<string, number>} */
  const imported = new Map();
  for (const [domain, version] of opsetImports) {
    const range = allowedSets[domain];
    if (!range || version < range[0] || version > range[1]) {
      throw new Refused(`it imports opset ${domain || 'ai.onnx'} ${version}; allowed: `
        + Object.entries(allowedSets).filter(([d]) => d !== 'ai.onnx').map(([d, [a, b]]) => `${d || 'ai.onnx'} ${a}..${b}`).join(', '));
    }
    imported.set(domain, version);
  }
  if (!graphs.length) throw new Refused('it has no graph');
  /** @type {number[][]} */
  const nodes = [];
  /** @type {number[][]} */
  const inits = [];
  let sparse = 0;
  /** @type {ValueInfo[]} */
  const gin = [];
  /** @type {ValueInfo[]} */
  const gout = [];
  for (const [f, w, v] of graphs.flatMap((g) => [...fields(buf, g[0], g[1])])) {
    if (w !== 2) continue;
    if (f === 1) nodes.push(v);
    else if (f === 5) inits.push(v);
    else if (f === 15) sparse++;
    else if (f === 11) gin.push(valueInfo(buf, v));
    else if (f === 12) gout.push(valueInfo(buf, v));
  }
  if (sparse) throw new Refused('it holds sparse initializers');
  if (nodes.length > bound('graph.nodes') || inits.length > bound('graph.initializers')) {
    throw new Refused(`${nodes.length} nodes and ${inits.length} initializers (at most ${bound('graph.nodes')} and ${bound('graph.initializers')})`);
  }
  const state = new Graph(buf, cap);
  /** @type {Set<string>} */
  const initializers = new Set();
  for (const span of inits) {
    const t = parseTensor(buf, [span]);
    const [shape, value] = tensorMeta(buf, t, `initializer ${repr(t.name)}`);
    state.set(t.name, shape, value, false);
    initializers.add(t.name);
  }
  checkIo(gin, gout, inputs, outputs, dims, initializers, taskTensors, state);
  const allowed = operators(kind);
  for (const span of nodes) {
    let name = '';
    let op = '';
    let domain = '';
    /** @type {string[]} */
    const ins = [];
    /** @type {string[]} */
    const outs = [];
    /** @type {number[][]} */
    const attrs = [];
    for (const [f, w, v] of fields(buf, span[0], span[1])) {
      if (w !== 2) continue;
      if (f === 1) ins.push(text(buf, v));
      else if (f === 2) outs.push(text(buf, v));
      else if (f === 3) name = text(buf, v);
      else if (f === 4) op = text(buf, v);
      else if (f === 7) domain = text(buf, v);
      else if (f === 5) attrs.push(v);
    }
    if (domain === 'ai.onnx') domain = '';
    if (!(allowed[domain] ?? new Set()).has(op)) {
      throw new Refused(`node ${repr(name)} uses operator ${domain ? `${domain}.` : ''}${op}, which taskfold's exporter does not write in a ${kind} graph`);
    }
    if (!imported.has(domain) && !(domain === '' && imported.has('ai.onnx'))) {
      throw new Refused(`node ${repr(name)} uses domain ${domain || 'ai.onnx'}, which the graph does not import`);
    }
    /** @type {Map<string, Attr>} */
    const attributes = new Map();
    for (const a of attrs) attributes.set(...attribute(buf, a));
    state.run({ name, op, inputs: ins, outputs: outs, attrs: attributes });
  }
  for (const o of outputs) {
    const got = state.shapes.get(o.name) ?? null;
    const want = o.shape.map((d) => BigInt(typeof d === 'number' ? d : dims[d]));
    if (got === null || got.join() !== want.join() || got.length !== want.length) {
      throw new Refused(`output ${repr(o.name)} would have shape ${repr(got)}, the manifest declares ${list(o.shape)}`);
    }
  }
  return { nodes: nodes.length, largestValue: Number(state.largest), totalElements: Number(state.total) };
}

/**
 * One attribute as `[name, value]` (`_attrs`): an int (BigInt), float, string, ints, floats or a
 * tensor's span; subgraphs, references and kinds taskfold never writes are refused.
 * @param {Uint8Array} buf @param {number[]} span
 * @returns {[string, Attr]}
 */
function attribute(buf, span) {
  let name = '';
  let type = 0;
  let ref = '';
  let graphs = 0;
  let sparse = 0;
  let tensors = 0;
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  /** @type {{ f: number[], i: bigint[], s: number[] | null, t: number[][], floats: number[], ints: bigint[] }} */
  const got = { f: [], i: [], s: null, t: [], floats: [], ints: [] };
  for (const [f, w, v, at] of fields(buf, span[0], span[1])) {
    if (f === 1 && w === 2) name = text(buf, v);
    else if (f === 20 && w === 0) type = v;
    else if (f === 21 && w === 2) ref = text(buf, v);
    else if ((f === 6 || f === 11) && w === 2) graphs++;
    else if ((f === 22 || f === 23 || f === 14 || f === 15) && w === 2) sparse++;
    else if (f === 10 && w === 2) tensors++;
    else if (f === 2 && w === 5) fixed(view, w, v, at, 4, got.f);
    else if (f === 3 && w === 0) ints(buf, w, v, at, got.i);
    else if (f === 4 && w === 2) got.s = v;
    else if (f === 5 && w === 2) got.t.push(v);  // a tensor given twice is one, merged
    else if (f === 7) fixed(view, w, v, at, 4, got.floats);
    else if (f === 8) ints(buf, w, v, at, got.ints);
  }
  if (ref) throw new Refused(`attribute ${repr(name)} refers to a function attribute`);
  if (ATTR_GRAPH.has(type) || graphs) throw new Refused(`attribute ${repr(name)} holds a subgraph`);
  if (ATTR_OTHER.has(type) || sparse) throw new Refused(`attribute ${repr(name)} has a kind taskfold does not write`);
  if (type === 9 || tensors) throw new Refused(`attribute ${repr(name)} holds a list of tensors`);
  if (type === 7 && got.ints.length > 64) throw new Refused(`attribute ${repr(name)} has ${got.ints.length} values`);
  /** @type {Record<number, () => Attr>} */
  const value = {
    1: () => got.f.at(-1) ?? 0, 2: () => got.i.at(-1) ?? 0n, 3: () => (got.s ? utf8.decode(buf.subarray(got.s[0], got.s[1])) : ''),
    4: () => ({ tensor: got.t }), 6: () => got.floats.slice(0, 64), 7: () => got.ints,
  };
  if (!(type in value)) throw new Refused(`attribute ${repr(name)} has a kind taskfold does not write`);
  return [name, value[type]()];
}

/**
 * @param {ValueInfo[]} gin
 * @param {ValueInfo[]} gout
 * @param {TensorDoc[]} inputs
 * @param {TensorDoc[]} outputs
 * @param {Record<string, number>} dims
 * @param {Set<string>} initializers
 * @param {TensorDoc[]} taskTensors
 * @param {Graph} state where each input's shape is set
 */
function checkIo(gin, gout, inputs, outputs, dims, initializers, taskTensors, state) {
  const wantIn = new Map(inputs.map((t) => [t.name, t]));
  const task = new Map(taskTensors.map((t) => [t.name, t]));
  const byName = new Map(gin.map((vi) => [vi.name, vi]));
  const missing = [...task.keys()].filter((n) => !byName.has(n));
  const both = [...task.keys()].filter((n) => wantIn.has(n)).sort();
  if (missing.length || both.length) throw new Refused(`its inputs lack the task tensor ${list(missing.length ? missing.slice(0, 1) : both.slice(0, 1))}`);
  const required = gin.map((vi) => vi.name).filter((n) => !initializers.has(n));
  const got = required.filter((n) => !task.has(n)).sort();
  const want = [...wantIn.keys()].sort();
  if (got.join('\0') !== want.join('\0') || got.length !== want.length) {
    throw new Refused(`its inputs are ${list(required.slice(0, 8))}, the manifest declares ${list([...wantIn.keys()].slice(0, 8))}`);
  }
  for (const [name, vi] of byName) {
    const declared = wantIn.get(name) ?? task.get(name);
    if (!declared) continue;  // an input with an initializer default that nobody feeds: the initializer is its value
    same(vi, declared, dims, 'input');
    const shape = declared.shape.map((d) => BigInt(typeof d === 'number' ? d : dims[d]));
    const init = state.shapes.get(name);
    if (initializers.has(name) && init && init.join() !== shape.join()) {
      throw new Refused(`input ${repr(name)}'s default has shape ${repr(init)}, the manifest declares ${repr(shape)}`);
    }
    state.set(name, shape, null, false);
  }
  const gotOut = gout.map((vi) => vi.name);
  if (gotOut.join('\0') !== outputs.map((t) => t.name).join('\0') || gotOut.length !== outputs.length) {
    throw new Refused(`its outputs are ${list(gotOut.slice(0, 8))}, the manifest declares ${list(outputs.map((t) => t.name).slice(0, 8))}`);
  }
  gout.forEach((vi, i) => same(vi, outputs[i], dims, 'output'));
}

/**
 * @param {ValueInfo} vi
 * @param {TensorDoc} declared
 * @param {Record<string, number>} dims
 * @param {string} what
 */
function same(vi, declared, dims, what) {
  if (vi.elem === null) throw new Refused(`${what} ${repr(vi.name)} is not a tensor`);
  const elem = ELEM[vi.elem];
  if (!elem) throw new Refused(`${what} ${repr(vi.name)} has element type ${vi.elem}, not one taskfold writes`);
  if (vi.dims === null) throw new Refused(`${what} ${repr(vi.name)} has no shape`);
  const shape = vi.dims;
  if (elem !== declared.dtype || shape.length !== declared.shape.length) {
    throw new Refused(`${what} ${repr(vi.name)} is ${elem} ${list(shape)}, the manifest declares ${declared.dtype} ${list(declared.shape)}`);
  }
  shape.forEach((g, k) => {
    const w = declared.shape[k];
    if (typeof w === 'number') {
      if (g !== w && !(what === 'output' && typeof g === 'string')) {
        throw new Refused(`${what} ${repr(vi.name)} has shape ${list(shape)}, the manifest declares ${list(declared.shape)}`);
      }
    } else if (!(w in dims)) throw new Refused(`${what} ${repr(vi.name)} has a dimension ${repr(w)} the package does not size`);
  });
}

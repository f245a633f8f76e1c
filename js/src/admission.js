/**
 * Graph admission, structural part (mirrors the checks of `runtime/admission.py` that need no shape
 * inference): a graph the runtime runs must look like one taskfold's exporter writes before any
 * session sees it —
 *
 * - no model-local functions, no training information, no sparse initializers;
 * - only the opsets of `package_schema.json` imported, and every node's operator in the set the
 *   exporter writes for the graph's kind (`unet`, `text_encoder`, `codec`), from an imported domain;
 * - no attribute that holds a subgraph, refers to a function attribute, or is of a kind the exporter
 *   never writes (so no `Loop`/`If` bodies, no `Scan`);
 * - at most the bounded number of nodes and initializers;
 * - the graph's required inputs and its outputs exactly the manifest's (names, element types, shapes).
 *
 * Not ported (the Python runtime does it): computing every value's shape to bound memory (an `Expand`
 * to billions of elements); ONNX Runtime Web then fails on its own memory cap instead.
 */

import { PackageError, repr } from './errors.js';
import { bound, limits, operators } from './limits.js';
import { Malformed, fields, text } from './onnx_refs.js';

const HINT = 'the package is damaged; re-copy or re-export it';
/** ONNX TensorProto element types by number, as NumPy names them (those taskfold writes). */
const ELEM = /** @type {Record<number, string>} */ ({ 1: 'float32', 10: 'float16', 7: 'int64', 6: 'int32', 9: 'bool', 2: 'uint8' });
const ATTR_GRAPH = new Set([5, 10]);
const ATTR_OTHER = new Set([11, 12, 13, 14, 8, 0]);

class Refused extends Error {}

/**
 * @typedef {{ name: string, elem: number | null, dims: (number | string)[] | null }} ValueInfo
 * @typedef {import('./manifest.js').TensorDoc} TensorDoc
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
            vi.dims = [];
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
 * @param {Uint8Array} data
 * @param {{ where: string, kind: string, inputs: TensorDoc[], outputs: TensorDoc[], dims: Record<string, number>,
 *   taskTensors?: TensorDoc[] }} spec
 */
export function admitGraph(data, { where, kind, inputs, outputs, dims, taskTensors = [] }) {
  try {
    admit(data, kind, inputs, outputs, dims, taskTensors);
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
 * @param {TensorDoc[]} taskTensors
 */
function admit(buf, kind, inputs, outputs, dims, taskTensors) {
  let functions = 0;
  let training = 0;
  /** @type {[string, number][]} */
  const opsetImports = [];
  /** @type {number[] | null} */
  let graph = null;
  for (const [f, w, v] of fields(buf, 0, buf.length)) {
    if (w !== 2) continue;
    if (f === 25) functions++;
    else if (f === 20) training++;
    else if (f === 7) graph = v;
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
  if (graph === null) throw new Refused('it has no graph');
  /** @type {number[][]} */
  const nodes = [];
  /** @type {Set<string>} */
  const initializers = new Set();
  let initCount = 0;
  let sparse = 0;
  /** @type {ValueInfo[]} */
  const gin = [];
  /** @type {ValueInfo[]} */
  const gout = [];
  for (const [f, w, v] of fields(buf, graph[0], graph[1])) {
    if (w !== 2) continue;
    if (f === 1) nodes.push(v);
    else if (f === 5) {
      initCount++;
      for (const [f2, w2, v2] of fields(buf, v[0], v[1])) if (f2 === 8 && w2 === 2) initializers.add(text(buf, v2));
    } else if (f === 15) sparse++;
    else if (f === 11) gin.push(valueInfo(buf, v));
    else if (f === 12) gout.push(valueInfo(buf, v));
  }
  if (sparse) throw new Refused('it holds sparse initializers');
  if (nodes.length > bound('graph.nodes') || initCount > bound('graph.initializers')) {
    throw new Refused(`${nodes.length} nodes and ${initCount} initializers (at most ${bound('graph.nodes')} and ${bound('graph.initializers')})`);
  }
  checkIo(gin, gout, inputs, outputs, dims, initializers, taskTensors);
  const allowed = operators(kind);
  for (const span of nodes) {
    let name = '';
    let op = '';
    let domain = '';
    /** @type {number[][]} */
    const attrs = [];
    for (const [f, w, v] of fields(buf, span[0], span[1])) {
      if (w !== 2) continue;
      if (f === 3) name = text(buf, v);
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
    for (const a of attrs) checkAttribute(buf, a);
  }
}

/** @param {Uint8Array} buf @param {number[]} span */
function checkAttribute(buf, span) {
  let name = '';
  let type = 0;
  let ref = '';
  let graphs = 0;
  let sparse = 0;
  let tensors = 0;
  for (const [f, w, v] of fields(buf, span[0], span[1])) {
    if (f === 1 && w === 2) name = text(buf, v);
    else if (f === 20 && w === 0) type = v;
    else if (f === 21 && w === 2) ref = text(buf, v);
    else if ((f === 6 || f === 11) && w === 2) graphs++;
    else if ((f === 22 || f === 23 || f === 14 || f === 15) && w === 2) sparse++;
    else if (f === 10 && w === 2) tensors++;
  }
  if (ref) throw new Refused(`attribute ${repr(name)} refers to a function attribute`);
  if (ATTR_GRAPH.has(type) || graphs) throw new Refused(`attribute ${repr(name)} holds a subgraph`);
  if (ATTR_OTHER.has(type) || sparse) throw new Refused(`attribute ${repr(name)} has a kind taskfold does not write`);
  if (type === 9 || tensors) throw new Refused(`attribute ${repr(name)} holds a list of tensors`);
}

/**
 * @param {ValueInfo[]} gin
 * @param {ValueInfo[]} gout
 * @param {TensorDoc[]} inputs
 * @param {TensorDoc[]} outputs
 * @param {Record<string, number>} dims
 * @param {Set<string>} initializers
 * @param {TensorDoc[]} taskTensors
 */
function checkIo(gin, gout, inputs, outputs, dims, initializers, taskTensors) {
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
    if (declared) same(vi, declared, dims, 'input');
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

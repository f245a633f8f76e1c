#!/usr/bin/env node
// Graph admission on serialized graphs, one result each:  node tools/admit_graphs.mjs [--values] CASES.json OUT.json
// CASES.json: [ { "data": base64 ModelProto, "kind", "inputs", "outputs", "dims", "cap" } ];
// OUT.json: [ { "admitted": { "nodes", "largestValue", "totalElements" } } or { "error": { "name", "message" } } ], with
// --values also "values": { name: [shape, [dtype, values] or null] } of every value the admission set (numbers as
// strings: integers in decimal, floats as 'nan'/'inf'/'-inf' or the number), for tests/js to compare with Python's.
import { readFileSync, writeFileSync } from 'node:fs';
import { admitGraph } from '../src/admission.js';
import { Graph } from '../src/shapes.js';

const args = process.argv.slice(2);
const trace = args[0] === '--values';
const [casesPath, outPath] = trace ? args.slice(1) : args;
/** @type {Record<string, any>} */
let values = {};
if (trace) {
  const set = Graph.prototype.set;
  Graph.prototype.set = function (name, shape, value = null, counted = true) {
    set.call(this, name, shape, value, counted);
    const v = this.values.get(name);
    const num = (/** @type {bigint | number} */ x) => (typeof x === 'bigint' ? String(x) : Number.isFinite(x) ? x : String(x).replace('Infinity', 'inf').replace('NaN', 'nan'));
    values[name] = [shape.map(String), v ? [v.dtype, v.data.map(num)] : null];
  };
}
const out = JSON.parse(readFileSync(casesPath, 'utf8')).map((/** @type {any} */ c) => {
  values = {};
  /** @type {Record<string, any>} */
  let result;
  try {
    result = { admitted: admitGraph(Buffer.from(c.data, 'base64'), { where: 'g.onnx', ...c }) };
  } catch (e) {
    const err = /** @type {Error} */ (e);
    result = { error: { name: err.name, message: err.message } };
  }
  return trace ? { ...result, values } : result;
});
writeFileSync(outPath, JSON.stringify(out));

/**
 * JSON as Python's `json.loads` reads a package's JSON (mirrors `runtime/manifest.parse_json`):
 * UTF-8 only, NaN/Infinity refused, nesting bounded — and a number written as a float (`20.0`,
 * `2e1`) stays distinguishable from an integer while the manifest is checked, because the schema
 * says "an integer" where Python would refuse `20.0`.
 *
 * {@link parseJsonChecked} returns plain values with such floats boxed (`new Number(20)`); the
 * checkers in manifest.js accept a boxed number wherever Python accepts a float, and
 * {@link unbox} turns the checked document into plain JS values.
 */

import { PackageError } from './errors.js';

const MAX_DEPTH = 512;
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * JSON from bytes, refusing NaN/Infinity and anything that is not UTF-8 JSON.
 * @param {Uint8Array | string} data
 * @param {string} where
 * @returns {any} the value, integral float literals boxed (see the module docstring)
 */
export function parseJsonChecked(data, where) {
  let text;
  try {
    text = typeof data === 'string' ? data : decoder.decode(data);
  } catch (e) {
    throw new PackageError(`${where} is not valid JSON: 'utf-8' codec can't decode it`,
      'the package is damaged; re-copy or re-export it');
  }
  try {
    return new Parser(text).document();
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
    throw new PackageError(`${where} is not valid JSON: ${e.message.slice(0, 200)}`,
      'the package is damaged; re-copy or re-export it');
  }
}

/**
 * Plain JSON (floats unboxed) from bytes, with the same refusals.
 * @param {Uint8Array | string} data
 * @param {string} where
 */
export function parseJson(data, where) {
  return unbox(parseJsonChecked(data, where));
}

/**
 * `value` with every boxed float turned back into a plain number.
 * @param {any} value
 * @returns {any}
 */
export function unbox(value) {
  if (value instanceof Number) return value.valueOf();
  if (Array.isArray(value)) return value.map(unbox);
  if (value !== null && typeof value === 'object') {
    /** @type {Record<string, any>} */
    const out = {};
    for (const [k, v] of Object.entries(value)) Object.defineProperty(out, k, { value: unbox(v), enumerable: true, writable: true, configurable: true });
    return out;
  }
  return value;
}

class Parser {
  /** @param {string} text */
  constructor(text) {
    this.s = text;
    this.i = 0;
  }

  /** @param {string} what */
  fail(what) {
    const before = this.s.slice(0, this.i);
    const line = before.split('\n').length;
    const col = this.i - before.lastIndexOf('\n');
    return new SyntaxError(`${what}: line ${line} column ${col} (char ${this.i})`);
  }

  ws() {
    while (this.i < this.s.length) {
      const c = this.s.charCodeAt(this.i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) this.i++;
      else break;
    }
  }

  document() {
    this.ws();
    const v = this.value(0);
    this.ws();
    if (this.i !== this.s.length) throw this.fail('Extra data');
    return v;
  }

  /** @param {number} depth @returns {any} */
  value(depth) {
    if (depth > MAX_DEPTH) throw this.fail('maximum nesting depth exceeded');
    const c = this.s[this.i];
    if (c === '{') return this.object(depth);
    if (c === '[') return this.array(depth);
    if (c === '"') return this.string();
    if (this.s.startsWith('true', this.i)) { this.i += 4; return true; }
    if (this.s.startsWith('false', this.i)) { this.i += 5; return false; }
    if (this.s.startsWith('null', this.i)) { this.i += 4; return null; }
    for (const name of ['NaN', 'Infinity', '-Infinity']) {
      if (this.s.startsWith(name, this.i)) throw new SyntaxError(`${name} is not allowed`);
    }
    if (c === '-' || (c >= '0' && c <= '9')) return this.number();
    throw this.fail('Expecting value');
  }

  /** @param {number} depth */
  object(depth) {
    this.i++;
    /** @type {Record<string, any>} */
    const out = {};
    this.ws();
    if (this.s[this.i] === '}') { this.i++; return out; }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') throw this.fail('Expecting property name enclosed in double quotes');
      const key = this.string();
      this.ws();
      if (this.s[this.i] !== ':') throw this.fail("Expecting ':' delimiter");
      this.i++;
      this.ws();
      const v = this.value(depth + 1);
      Object.defineProperty(out, key, { value: v, enumerable: true, writable: true, configurable: true });
      this.ws();
      if (this.s[this.i] === ',') { this.i++; continue; }
      if (this.s[this.i] === '}') { this.i++; return out; }
      throw this.fail("Expecting ',' delimiter");
    }
  }

  /** @param {number} depth */
  array(depth) {
    this.i++;
    /** @type {any[]} */
    const out = [];
    this.ws();
    if (this.s[this.i] === ']') { this.i++; return out; }
    for (;;) {
      this.ws();
      out.push(this.value(depth + 1));
      this.ws();
      if (this.s[this.i] === ',') { this.i++; continue; }
      if (this.s[this.i] === ']') { this.i++; return out; }
      throw this.fail("Expecting ',' delimiter");
    }
  }

  string() {
    const start = this.i;
    this.i++;
    let out = '';
    for (;;) {
      if (this.i >= this.s.length) { this.i = start; throw this.fail('Unterminated string starting at'); }
      const c = this.s[this.i];
      if (c === '"') { this.i++; return out; }
      if (c === '\\') {
        const e = this.s[this.i + 1];
        const simple = /** @type {Record<string, string>} */ ({ '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' });
        if (e in simple) { out += simple[e]; this.i += 2; continue; }
        if (e === 'u') {
          const hex = this.s.slice(this.i + 2, this.i + 6);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) throw this.fail('Invalid \\uXXXX escape');
          out += String.fromCharCode(parseInt(hex, 16));
          this.i += 6;
          continue;
        }
        throw this.fail('Invalid \\escape');
      }
      if (c.charCodeAt(0) < 0x20) throw this.fail('Invalid control character at');
      out += c;
      this.i++;
    }
  }

  number() {
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?/.exec(this.s.slice(this.i, this.i + 400));
    if (!m) throw this.fail('Expecting value');
    this.i += m[0].length;
    const v = Number(m[0]);
    const isFloat = m[2] !== undefined || m[3] !== undefined;
    if (!Number.isFinite(v)) throw new SyntaxError(`number ${m[0].slice(0, 40)} is out of range`);
    // eslint-disable-next-line no-new-wrappers
    return isFloat ? new Number(v) : v;
  }
}

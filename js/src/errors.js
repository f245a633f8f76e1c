/**
 * Typed errors, mirroring `taskfold/errors.py`: the library throws these; the CLI turns them into one
 * line (`error: …`, then `hint: …`) and an exit code.
 */

/** Base class for every error a user can cause. `hint` says how to fix it. */
export class TaskfoldError extends Error {
  /**
   * @param {string} message
   * @param {string | null} [hint]
   */
  constructor(message, hint = null) {
    super(message);
    this.name = new.target.name;
    /** @type {string | null} */
    this.hint = hint;
    /** @type {number} */
    this.exitCode = 2;
  }
}

/** An unknown task name or an invalid task declaration. */
export class TaskError extends TaskfoldError {}

/** A configuration value is out of range, inconsistent, or from an unknown schema. */
export class ConfigError extends TaskfoldError {}

/** An exported package is missing files, or a file does not match its manifest entry. */
export class PackageError extends TaskfoldError {
  /**
   * @param {string} message
   * @param {string | null} [hint]
   * @param {string | null} [problem] the bare problem text (what `verify` lists)
   */
  constructor(message, hint = null, problem = null) {
    super(message, hint);
    /** @type {string | null} */
    this.problem = problem;
  }
}

/** The output path cannot be written. */
export class OutputError extends TaskfoldError {}

/** The output path already exists and overwriting was not asked for. */
export class OutputExistsError extends OutputError {}

/**
 * A value as Python's `repr` writes it in a message (strings quoted, `None`, `True`), so that the
 * two runtimes' messages read the same.
 * @param {unknown} value
 * @returns {string}
 */
export function repr(value) {
  if (value === null || value === undefined) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (value instanceof Number) return pyFloat(value.valueOf());  // a float literal (see json.js)
  if (typeof value === 'number') return Number.isInteger(value) ? String(value) : pyFloat(value);
  if (typeof value === 'bigint') return String(value);
  if (typeof value === 'string') return pyStr(value);
  if (Array.isArray(value)) return `[${value.map(repr).join(', ')}]`;
  if (typeof value === 'object') {
    return `{${Object.entries(/** @type {object} */ (value)).map(([k, v]) => `${pyStr(k)}: ${repr(v)}`).join(', ')}}`;
  }
  return String(value);
}

/**
 * Python's `repr(float)`: shortest round trip, always with a '.', or exponent form like `1e-05`.
 * @param {number} x
 */
export function pyFloat(x) {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  const abs = Math.abs(x);
  if (abs !== 0 && (abs < 1e-4 || abs >= 1e16)) {
    const [m, e] = x.toExponential().split('e');
    const exp = Number(e);
    return `${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  const s = String(x);
  return s.includes('.') || s.includes('e') ? s : `${s}.0`;
}

/**
 * Python's `:g` format of a number (6 significant digits, trailing zeros dropped).
 * @param {number} x
 */
export function fmtG(x) {
  if (Number.isInteger(x) && Math.abs(x) < 1e6) return String(x);
  let s = Number(x).toPrecision(6);
  if (s.includes('e')) {
    let [m, e] = s.split('e');
    if (m.includes('.')) m = m.replace(/0+$/, '').replace(/\.$/, '');
    const exp = Number(e);
    return `${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  if (s.includes('.')) s = s.replace(/0+$/, '').replace(/\.$/, '');
  return s;
}

/** @param {string} s */
function pyStr(s) {
  const q = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = '';
  for (const ch of s) {
    const c = /** @type {number} */ (ch.codePointAt(0));
    if (ch === '\\') out += '\\\\';
    else if (ch === q) out += `\\${q}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return q + out + q;
}

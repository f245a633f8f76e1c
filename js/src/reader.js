/**
 * The one way into a package (mirrors `runtime/reader.py`): every file the runtime opens, from a
 * folder (Node) or from a URL (Node or a browser).
 *
 * A package is an artefact people download, so nothing in it may make the runtime touch anything
 * outside it (DESIGN.md, "Packages are untrusted input"). {@link PackageReader} guarantees:
 *
 * - **The manifest is checked before use**: at most `MAX_JSON_BYTES`, UTF-8 JSON without
 *   NaN/Infinity, every key and type of the schema, one {@link PackageError} naming the key.
 * - **Every path is confined**: a path the manifest, a weight index or a graph names is refused
 *   when absolute or when it has a `..` component. In a folder it is resolved one component at a
 *   time from the package root, and a symbolic link or a hard-linked file is refused; from a URL each
 *   component is percent-encoded and the resolved URL must keep the package's origin and path
 *   prefix (redirects are refused), so no other origin is ever asked for anything.
 * - **Only listed files are opened**: a file is read only if `manifest.files` lists it with size
 *   and sha256, and only when its size equals the listed one (a URL's body is read up to that size
 *   plus one byte, never more). With `verify` (the default) its sha256 is checked (node:crypto in
 *   a folder, Web Crypto on fetched bytes), once per reader, before any session sees it; fetched
 *   bytes are kept and are exactly what the session is given.
 * - **Byte ranges are checked**: every weight record and every external-data reference inside an
 *   `.onnx` graph lies within its listed file, and a record's length equals its shape x dtype size.
 * - **The closure is checked**: {@link PackageReader#graphFiles} lists every file a graph makes
 *   anyone read; each one must be listed.
 *
 * What it does not guard against: a folder package modified *while* it is open (files are checked
 * when first used, then trusted), and hostile graphs that are well-formed.
 */

import { PackageError, repr } from './errors.js';
import { parseJsonChecked } from './json.js';
import { MANIFEST, MAX_JSON_BYTES, validateManifest, validateWeightIndex } from './manifest.js';
import { externalRefs } from './onnx_refs.js';
import { bound } from './limits.js';
import { admitGraph, graphKind, valueCap } from './admission.js';
import { tokenizerFromFiles } from './tokenizers.js';
import { sha256HexJs } from './sha256.js';

/** The largest body handed to Web Crypto's one-shot digest (larger ones: sha256.js). */
export const WEB_CRYPTO_MAX = 1 << 30;

const HINT = 'the package is damaged or was crafted; re-copy or re-export it (`taskfold verify PKG` lists every problem)';

/**
 * @typedef {import('./manifest.js').Manifest} Manifest
 * @typedef {import('./manifest.js').GraphDoc} GraphDoc
 * @typedef {import('./manifest.js').ComponentDoc} ComponentDoc
 * @typedef {{ name: string, rel: string, offset: number, length: number, dtype: string, shape: number[] }} WeightRecord
 * @typedef {{ size: number, isFile: boolean }} Stat
 */

/**
 * A path the manifest may name: relative, POSIX, no `..` component, no backslash or NUL.
 * @param {any} rel
 */
export function isRelative(rel) {
  return typeof rel === 'string' && rel.length > 0 && !rel.startsWith('/') && !rel.includes('\\') && !rel.includes('\0')
    && !rel.split('/').includes('..') && !(rel.length > 1 && rel[1] === ':');
}

/** @param {string} rel */
function split(rel) {
  return rel.split('/').filter((p) => p !== '' && p !== '.');
}

/**
 * The largest size a listed file of this kind may have (`package_schema.json` bounds.bytes).
 * @param {string} rel
 */
export function fileBound(rel) {
  const name = rel.split('/').pop() ?? '';
  if (name.endsWith('.onnx')) return bound('bytes.graph');
  if (name.startsWith('tokenizer') || name === 'special_tokens_map.json') return bound('bytes.tokenizer');
  if (name.endsWith('.json')) return bound('bytes.json');
  if (name.endsWith('.safetensors') || name.endsWith('.onnx_adapter')) return bound('bytes.adapter');
  if (name.endsWith('.weights') || name.endsWith('.bin')) return bound('bytes.weights');
  return bound('bytes.other');
}

/** @param {string} rel */
function folderOf(rel) {
  return rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '';
}

/** @param {string[]} files @param {string} rel */
function add(files, rel) {
  if (!files.includes(rel)) files.push(rel);
}

/**
 * sha256 of bytes, hex (Web Crypto: Node >= 19 and every browser's secure context).
 * @param {Uint8Array} data
 */
export async function sha256Hex(data) {
  if (data.byteLength > WEB_CRYPTO_MAX) return sha256HexJs(data); // Web Crypto refuses bodies near 2 GiB and above
  const digest = await globalThis.crypto.subtle.digest('SHA-256', /** @type {Uint8Array<ArrayBuffer>} */ (data));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

// --- sources: where the bytes come from ---------------------------------------------------------

/**
 * A package folder on this machine (Node): paths resolved one component at a time with `lstat`; a
 * symbolic link on the way, or a file with several hard links, is refused, so nothing outside is
 * ever looked at.
 */
export class DirSource {
  /** @param {string} root real path of the package folder */
  constructor(root) {
    this.root = root;
    this.kind = 'dir';
  }

  /** @param {string} name */
  static async open(name) {
    const fs = await import('node:fs/promises');
    let root;
    try {
      root = await fs.realpath(name);
      if (!(await fs.stat(root)).isDirectory()) root = null;
    } catch {
      root = null;
    }
    if (root === null) throw new PackageError(`package ${repr(name)} is not a directory`, 'give the --out of `taskfold export`');
    return new DirSource(root);
  }

  /**
   * `[real path, lstat]` of `rel` inside the package; refuses anything that leaves it.
   * @param {string} rel
   * @param {string} where
   * @param {(p: string) => PackageError} fail
   * @returns {Promise<[string, Stat]>}
   */
  async resolve(rel, where, fail) {
    const fs = await import('node:fs/promises');
    const path = await import('node:path');
    let cur = this.root;
    const parts = split(rel);
    if (parts.length > bound('path_depth')) throw fail(`${where}: ${repr(rel)} is nested deeper than ${bound('path_depth')} folders`);
    let st = await fs.lstat(cur);
    for (const part of parts) {
      const next = path.join(cur, part);
      try {
        st = await fs.lstat(next);
      } catch (e) {
        const code = /** @type {any} */ (e).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') throw fail(`${where}: ${repr(rel)} is missing from the package`);
        throw fail(`${where}: cannot read ${repr(rel)}: ${/** @type {any} */ (e).message}`);
      }
      if (st.isSymbolicLink()) {
        throw fail(`${where}: ${repr(rel)} passes through a symbolic link; a package holds no links (copy it with \`cp -rL\`)`);
      }
      cur = next;
    }
    if (st.isFile() && st.nlink > 1) {
      throw fail(`${where}: ${repr(rel)} has ${st.nlink} hard links; a package holds no links (a hard link can be a file outside it; copy the package with \`cp -r\`)`);
    }
    return [cur, { size: st.size, isFile: st.isFile() }];
  }

  /**
   * Exactly `size` bytes of the resolved file `real` (null: it changed size).
   * @param {string} real
   * @param {number} size
   */
  async read(real, size) {
    const fs = await import('node:fs/promises');
    const fh = await fs.open(real, 'r');
    try {
      const buf = new Uint8Array(size + 1);
      let n = 0;
      for (;;) {
        const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
        if (!bytesRead) break;
        n += bytesRead;
        if (n === buf.length) break;
      }
      return n === size ? buf.subarray(0, size) : null;
    } finally {
      await fh.close();
    }
  }

  /**
   * sha256 of the resolved file, streamed (node:crypto).
   * @param {string} real
   */
  async hash(real) {
    const fs = await import('node:fs');
    const { createHash } = await import('node:crypto');
    const h = createHash('sha256');
    for await (const chunk of fs.createReadStream(real, { highWaterMark: 1 << 22 })) h.update(chunk);
    return h.digest('hex');
  }
}

/**
 * A package served over HTTP(S): every file a URL under the package's base, confined to its
 * origin and path; bodies read with a bound; redirects refused.
 */
export class UrlSource {
  /**
   * @param {URL} base
   * @param {typeof fetch} fetchFn
   */
  constructor(base, fetchFn) {
    this.base = base;
    this.fetch = fetchFn;
    this.kind = 'url';
  }

  /**
   * The URL of `rel` under the base: each component percent-encoded; the result must keep the
   * base's origin and path prefix.
   * @param {string} rel
   * @param {string} where
   * @param {(p: string) => PackageError} fail
   */
  url(rel, where, fail) {
    const enc = split(rel).map((p) => encodeURIComponent(p)).join('/');
    const url = new URL(enc, this.base);
    if (url.origin !== this.base.origin || !url.pathname.startsWith(this.base.pathname) || url.search || url.hash) {
      throw fail(`${where}: path ${repr(rel)} is not a relative path inside the package (absolute paths and '..' are refused)`);
    }
    return url;
  }

  /**
   * The body of `url`: exactly `size` bytes, or a refusal naming what was wrong. Reads at most
   * `size + 1` bytes whatever the server sends.
   * @param {URL} url
   * @param {number} size
   * @param {string} rel
   * @param {string} where
   * @param {(p: string) => PackageError} fail
   * @returns {Promise<Uint8Array>}
   */
  async read(url, size, rel, where, fail) {
    let res;
    try {
      res = await this.fetch(url, { redirect: 'error', credentials: 'same-origin' });
    } catch (e) {
      throw fail(`${where}: cannot fetch ${repr(rel)} (${/** @type {any} */ (e).message}; redirects are refused)`);
    }
    if (res.status === 404 || res.status === 410) throw fail(`${where}: ${repr(rel)} is missing from the package`);
    if (!res.ok) throw fail(`${where}: cannot fetch ${repr(rel)}: HTTP ${res.status}`);
    const declared = res.headers.get('content-length');
    if (declared !== null && /^\d+$/.test(declared) && Number(declared) !== size && !res.headers.get('content-encoding')) {
      res.body?.cancel().catch(() => {});
      throw fail(`${rel}: ${declared} bytes, the manifest says ${size}`);
    }
    const out = new Uint8Array(size);
    let n = 0;
    if (!res.body) throw fail(`${where}: cannot fetch ${repr(rel)}: empty response`);
    const reader = res.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (n + value.length > size) {
        await reader.cancel().catch(() => {});
        throw fail(`${rel}: more than ${size} bytes, the manifest says ${size}`);
      }
      out.set(value, n);
      n += value.length;
    }
    if (n !== size) throw fail(`${rel}: ${n} bytes, the manifest says ${size}`);
    return out;
  }
}

// --- the reader -----------------------------------------------------------------------------------

/** A package opened for reading. See the module docstring for what it guarantees. */
export class PackageReader {
  /**
   * @param {string} name what messages call the package
   * @param {DirSource | UrlSource} source
   * @param {boolean} verify
   * @param {Manifest} manifest
   */
  constructor(name, source, verify, manifest) {
    this.name = name;
    this.source = source;
    this.verify = verify;
    this.manifest = manifest;
    this.files = manifest.files;
    /** @type {Set<string>} */
    this.hashed = new Set();
    /** @type {Map<string, Uint8Array>} bytes read and checked, kept for the session that needs them */
    this.bytes = new Map();
    /** @type {Map<string, WeightRecord[]>} */
    this.records = new Map();
    /** @type {Map<string, { files: string[], locations: Map<string, string> }>} */
    this.onnx = new Map();
    /** @type {Map<string, import('./admission.js').Admitted>} graph -> what its admission measured */
    this.admitted = new Map();
  }

  /**
   * Open a package folder (Node) or URL, its manifest read and validated.
   * @param {string | URL} location a folder path, or an http(s)/file URL of the package folder
   * @param {{ verify?: boolean, fetch?: typeof fetch }} [options]
   */
  static async open(location, { verify = true, fetch: fetchFn } = {}) {
    const name = String(location);
    const isUrl = location instanceof URL || /^[a-z][a-z0-9+.-]*:\/\//i.test(name) || typeof process === 'undefined';
    let source;
    if (isUrl) {
      const base = new URL(name, globalThis.location?.href);
      if (!base.pathname.endsWith('/')) base.pathname = base.pathname.endsWith(`/${MANIFEST}`) ? base.pathname.slice(0, -MANIFEST.length) : `${base.pathname}/`;
      base.search = '';
      base.hash = '';
      source = new UrlSource(base, fetchFn ?? globalThis.fetch.bind(globalThis));
    } else {
      source = await DirSource.open(name);
    }
    const manifest = await PackageReader.readManifest(name, source);
    return new PackageReader(name, source, verify, manifest);
  }

  /**
   * @param {string} name
   * @param {DirSource | UrlSource} source
   * @returns {Promise<Manifest>}
   */
  static async readManifest(name, source) {
    const missing = () => new PackageError(`${repr(name)} has no ${MANIFEST}: not a taskfold package, or its export did not finish`,
      're-run `taskfold export`');
    /** @param {string} p */
    const fail = (p) => new PackageError(`package ${repr(name)} is damaged: ${p}`, HINT, p);
    let data;
    if (source instanceof DirSource) {
      let real;
      let st;
      try {
        [real, st] = await source.resolve(MANIFEST, MANIFEST, fail);
      } catch (e) {
        if (e instanceof PackageError) throw missing();
        throw e;
      }
      if (!st.isFile || st.size > MAX_JSON_BYTES) throw fail(`${MANIFEST} is not a regular file of at most ${MAX_JSON_BYTES} bytes`);
      data = await source.read(real, st.size);
      if (data === null) throw fail(`${MANIFEST}: changed size while being read`);
    } else {
      const url = source.url(MANIFEST, MANIFEST, fail);
      let res;
      try {
        res = await source.fetch(url, { redirect: 'error', credentials: 'same-origin' });
      } catch (e) {
        throw new PackageError(`cannot fetch ${repr(url.href)}: ${/** @type {any} */ (e).message} (redirects are refused)`,
          'check the package URL; it must serve manifest.json directly');
      }
      if (res.status === 404 || res.status === 410) throw missing();
      if (!res.ok) throw new PackageError(`cannot fetch ${repr(url.href)}: HTTP ${res.status}`, 'check the package URL');
      data = await readCapped(res, MAX_JSON_BYTES);
      if (data === null) throw fail(`${MANIFEST} is not a regular file of at most ${MAX_JSON_BYTES} bytes`);
    }
    try {
      return validateManifest(parseJsonChecked(data, MANIFEST));
    } catch (e) {
      if (e instanceof PackageError) throw new PackageError(`package ${repr(name)}: ${e.message}`, e.hint);
      throw e;
    }
  }

  /**
   * The error for a problem with the package's contents (`.problem`: the bare text).
   * @param {string} problem
   */
  fail(problem) {
    return new PackageError(`package ${repr(this.name)} is damaged: ${problem}`, HINT, problem);
  }

  // --- paths --------------------------------------------------------------------------------------

  /**
   * The listed regular file `rel`, confined and its size checked against the manifest: its real
   * path in a folder, its URL otherwise.
   * @param {string} rel
   * @param {string} [where]
   * @returns {Promise<string | URL>}
   */
  async path(rel, where = 'manifest') {
    if (!isRelative(rel)) {
      throw this.fail(`${where}: path ${repr(rel)} is not a relative path inside the package (absolute paths and '..' are refused)`);
    }
    const fail = (/** @type {string} */ p) => this.fail(p);
    if (this.source instanceof UrlSource) {
      const url = this.source.url(rel, where, fail);
      if (!Object.hasOwn(this.files, rel)) throw this.notListed(rel, where);
      this.checkBound(rel, where);
      return url;  // its size is checked when it is read
    }
    const [real, st] = await this.source.resolve(rel, where, fail);
    const entry = Object.hasOwn(this.files, rel) ? this.files[rel] : undefined;
    if (entry === undefined) throw this.notListed(rel, where);
    if (!st.isFile) throw this.fail(`${where}: ${repr(rel)} is not a regular file`);
    this.checkBound(rel, where);
    if (st.size !== entry.bytes) throw this.fail(`${rel}: ${st.size} bytes, the manifest says ${entry.bytes}`);
    return real;
  }

  /** @param {string} rel @param {string} where */
  checkBound(rel, where) {
    const n = this.files[rel].bytes;
    if (n > fileBound(rel)) throw this.fail(`${where}: ${repr(rel)} is listed with ${n} bytes, more than the ${fileBound(rel)} a file of its kind may have`);
  }

  /** @param {string} rel @param {string} where */
  notListed(rel, where) {
    return this.fail(`${where}: ${repr(rel)} is not listed in the manifest's files (with size and sha256); taskfold opens only listed files`);
  }

  // --- bytes --------------------------------------------------------------------------------------

  /** @param {string} rel @param {string} digest */
  checkHash(rel, digest) {
    if (digest !== this.files[rel].sha256) throw this.fail(`${rel}: sha256 differs from the manifest (the file was modified or corrupted)`);
    this.hashed.add(rel);
  }

  /**
   * The bytes of a listed file (hashed from what was read, with `verify`).
   * @param {string} rel
   * @param {string} [where]
   * @param {number | null} [limit]
   * @returns {Promise<Uint8Array>}
   */
  async readBytes(rel, where = 'manifest', limit = null) {
    const cached = this.bytes.get(rel);
    if (cached) return cached;
    const p = await this.path(rel, where);
    const size = this.files[rel].bytes;
    if (limit !== null && size > limit) throw this.fail(`${where}: ${repr(rel)} is ${size} bytes, more than the ${limit} allowed for it`);
    let data;
    if (this.source instanceof UrlSource) {
      data = await this.source.read(/** @type {URL} */ (p), size, rel, where, (q) => this.fail(q));
    } else {
      data = await this.source.read(/** @type {string} */ (p), size);
      if (data === null) throw this.fail(`${rel}: changed size while being read`);
    }
    if (this.verify && !this.hashed.has(rel)) this.checkHash(rel, await sha256Hex(data));
    return data;
  }

  /** @param {string} rel @param {string} [where] */
  async readJson(rel, where = 'manifest') {
    const data = await this.readBytes(rel, where, MAX_JSON_BYTES);
    try {
      return parseJsonChecked(data, rel);
    } catch (e) {
      if (e instanceof PackageError) throw this.fail(e.message);
      throw e;
    }
  }

  /**
   * Sizes (always) and sha256 (with `verify`, once per file per reader) of listed files. From a
   * URL the checked bytes are kept ({@link PackageReader#take}) for the session that needs them.
   * @param {string[]} rels
   */
  async check(rels) {
    for (const rel of rels) {
      if (this.source instanceof UrlSource) {
        if (!this.bytes.has(rel)) this.bytes.set(rel, await this.readBytes(rel));
        continue;
      }
      const p = /** @type {string} */ (await this.path(rel));
      if (this.verify && !this.hashed.has(rel)) this.checkHash(rel, await this.source.hash(p));
    }
  }

  /**
   * The checked bytes of `rel` (from {@link PackageReader#check} or read now), dropped from the cache.
   * @param {string} rel
   */
  async take(rel) {
    const data = this.bytes.get(rel) ?? await this.readBytes(rel);
    this.bytes.delete(rel);
    return data;
  }

  // --- what graphs and components read ------------------------------------------------------------

  /**
   * The validated records of a graph's weight index, each byte range inside its listed file.
   * @param {string} indexRel
   * @param {string} graphRel
   */
  async weightRecords(indexRel, graphRel) {
    const known = this.records.get(indexRel);
    if (known) return known;
    const doc = await this.readJson(indexRel, indexRel);
    const folder = folderOf(graphRel);
    /** @type {WeightRecord[]} */
    const out = [];
    let recs;
    try {
      recs = validateWeightIndex(doc, indexRel);
    } catch (e) {
      if (e instanceof PackageError && e.problem === null) throw this.fail(e.message);
      throw e;
    }
    for (const [i, rec] of recs.entries()) {
      const rel = folder ? `${folder}/${rec.file}` : rec.file;
      const where = `${indexRel}: initializers[${i}] (${repr(rec.name)})`;
      await this.path(rel, where);
      const size = this.files[rel].bytes;
      if (rec.offset + rec.length > size) {
        throw this.fail(`${where}: bytes ${rec.offset}..${rec.offset + rec.length} lie beyond the end of ${rel} (${size} bytes)`);
      }
      out.push({ name: rec.name, rel, offset: rec.offset, length: rec.length, dtype: rec.dtype, shape: rec.shape });
    }
    this.records.set(indexRel, out);
    return out;
  }

  /**
   * `graphRel` and the listed files its external data names, every range inside its file; and the
   * external-data locations as the graph names them (what ONNX Runtime Web is given).
   * With `io` (the inputs, outputs and task tensors of a graph the runtime runs) the graph is admitted
   * first (admission.js).
   * @param {string} graphRel
   * @param {string} where
   * @param {{ inputs: import('./manifest.js').TensorDoc[], outputs: import('./manifest.js').TensorDoc[], task_tensors?: import('./manifest.js').TensorDoc[] } | null} [io]
   * @returns {Promise<{ files: string[], locations: Map<string, string> }>}
   */
  async onnxFiles(graphRel, where, io = null) {
    const known = this.onnx.get(graphRel);
    if (known) return known;
    const data = await this.readBytes(graphRel, where, bound('bytes.graph'));
    if (io) {
      const s = this.manifest.sample;
      /** @type {Record<string, number>} */
      let dims = { batch: s.batch, height: s.height, width: s.width, text_len: s.text_len, image_height: s.image_height, image_width: s.image_width };
      if (graphKind(graphRel) === 'codec') { // a dynamic codec names its pixel axes height/width and its latent axes latent_* (as runtime/reader.py)
        dims = { ...dims, height: s.image_height, width: s.image_width, latent_height: s.height, latent_width: s.width };
      }
      try {
        const cap = valueCap(s.batch, s.height, s.width);  // every value's size bounded at the sample size (runtime/reader.py)
        this.admitted.set(graphRel, admitGraph(data, { where: graphRel, kind: graphKind(graphRel), inputs: io.inputs,
          outputs: io.outputs, dims, cap, taskTensors: io.task_tensors ?? [] }));
      } catch (e) {
        if (e instanceof PackageError) throw this.fail(e.message);
        throw e;
      }
    }
    if (this.source instanceof UrlSource) this.bytes.set(graphRel, data);
    const folder = folderOf(graphRel);
    let refs;
    try {
      refs = externalRefs(data, graphRel);
    } catch (e) {
      if (e instanceof PackageError) throw this.fail(e.message);
      throw e;
    }
    const files = [graphRel];
    /** @type {Map<string, string>} location -> package path */
    const locations = new Map();
    for (const ref of refs) {
      const what = `${graphRel}: external data of ${repr(ref.tensor)}`;
      if (!isRelative(ref.location)) throw this.fail(`${what}: location ${repr(ref.location)} is not a relative path inside the package`);
      const rel = folder ? `${folder}/${ref.location}` : ref.location;
      await this.path(rel, what);
      const end = ref.offset + (ref.length ?? 0);
      if (end > this.files[rel].bytes) throw this.fail(`${what}: bytes ${ref.offset}..${end} lie beyond the end of ${rel} (${this.files[rel].bytes} bytes)`);
      add(files, rel);
      locations.set(ref.location, rel);
    }
    this.onnx.set(graphRel, { files, locations });
    return { files, locations };
  }

  /**
   * Every file a manifest graph entry makes anyone read, each one checked.
   * @param {GraphDoc} graph
   */
  async graphFiles(graph) {
    const where = `graph ${graph.task}/${graph.format}`;
    const rel = graph.path;
    /** @type {string[]} */
    const files = [];
    for (const r of [rel, graph.refittable_engine, graph.refit_from]) {
      if (r === undefined || r === null) continue;
      const io = graph.format === 'onnx' && r === rel ? graph : null;
      const list = r.endsWith('.onnx') ? (await this.onnxFiles(r, where, io)).files : [r];
      for (const f of list) {
        await this.path(f, where);
        add(files, f);
      }
    }
    for (const extra of [...(graph.external_data ?? []), ...(graph.adapter ? [graph.adapter] : [])]) {
      await this.path(extra, where);
      add(files, extra);
    }
    if (graph.weight_index) {
      for (const rec of await this.weightRecords(graph.weight_index, rel)) add(files, rec.rel);
      add(files, graph.weight_index);
    }
    return files;
  }

  /**
   * The files of a text-encoder or codec graph record (`{file, weights}` inside `folder`).
   * @param {string} folder
   * @param {ComponentDoc} rec
   */
  async componentFiles(folder, rec) {
    const { files } = await this.onnxFiles(`${folder}/${rec.file}`, `${folder}/${rec.file}`, { inputs: rec.inputs, outputs: rec.outputs ?? [] });
    for (const w of rec.weights ?? []) {
      await this.path(`${folder}/${w}`, folder);
      add(files, `${folder}/${w}`);
    }
    return files;
  }

  /** The package's tokenizer, admitted and built from its checked files. */
  async tokenizer() {
    const tok = /** @type {NonNullable<Manifest['text_encoder']>} */ (this.manifest.text_encoder).graph.tokenizer;
    /** @type {Record<string, Uint8Array>} */
    const files = {};
    for (const rel of await this.tokenizerFiles()) {
      files[rel.split('/').slice(1).join('/')] = await this.readBytes(rel, 'text_encoder.graph.tokenizer', bound('bytes.tokenizer'));
    }
    try {
      return tokenizerFromFiles(files, tok.max_length, tok.pad_id ?? null, 'text_encoder');
    } catch (e) {
      if (e instanceof PackageError) throw this.fail(e.message);
      throw e;
    }
  }

  /** The text encoder's tokenizer files (`text_encoder/<name>`), each one checked. */
  async tokenizerFiles() {
    const te = /** @type {NonNullable<Manifest['text_encoder']>} */ (this.manifest.text_encoder);
    const files = te.graph.tokenizer.files.map((n) => `text_encoder/${n}`);
    for (const f of files) await this.path(f, 'text_encoder.graph.tokenizer');
    return files;
  }
}

/**
 * A response body of at most `limit` bytes (null: longer).
 * @param {Response} res
 * @param {number} limit
 */
async function readCapped(res, limit) {
  if (!res.body) return new Uint8Array(0);
  const reader = res.body.getReader();
  /** @type {Uint8Array[]} */
  const chunks = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.length;
    if (n > limit) {
      await reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  const out = new Uint8Array(n);
  let pos = 0;
  for (const c of chunks) {
    out.set(c, pos);
    pos += c.length;
  }
  return out;
}

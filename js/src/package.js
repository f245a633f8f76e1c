/**
 * Run every task of an exported package (mirrors `runtime/package.py`): open it, pick a task, generate.
 *
 * ```js
 * import { openPackage } from 'taskfold-runtime';
 * const pkg = await openPackage('tiny-pkg');              // a folder (Node) or a URL (Node, browsers)
 * const [img] = await pkg.generate('edit', { prompt: 'make the circle blue', image, seed: 0 });
 * // img: { width, height, data: Uint8ClampedArray RGBA } — an ImageData's shape
 * ```
 *
 * Per call it does what the Python runtime's `Package.generate` does, with the same schedulers,
 * guidance, input assembly and seeded noise (same seed, same image). Steps, strength and guidance
 * scales default to the package's recommended sampling for the task.
 *
 * Sessions: one ONNX Runtime session per graph, created on first use and kept (onnxruntime-node
 * in Node, onnxruntime-web — WASM, or WebGPU when asked for and present — in browsers).
 *
 * Integrity: every file goes through {@link PackageReader} — confined to the package, listed in the
 * manifest with the right size, byte ranges checked, and with `verify` (the default) hashed against
 * the manifest before its session is created; a problem throws {@link PackageError} and no session
 * is made.
 */

import ortDefault, { platform as ortPlatform } from '#ort';
import { ConfigError, PackageError, repr } from './errors.js';
import { decodePng, fitImage, fitMask, maskToTensor, toChw, toRgb, toRgba } from './images.js';
import { DirSource, PackageReader } from './reader.js';
import { concat, rows, sample, checkInputs, checkNegative, checkOptions } from './sampler.js';
import { taskFromRecord, needsCondition, needsMask } from './tasks.js';
import { readTensors } from './safetensors.js';
import { bound } from './limits.js';

export const UNET_INPUTS = ['sample', 'timestep', 'encoder_hidden_states'];
/** `__metadata__.format` of an adapters-layout task file (`adapters/<task>.safetensors`). */
export const TASK_FILE_FORMAT = 'taskfold-task-tensors';

/**
 * @typedef {import('./sampler.js').Tensor} Tensor
 * @typedef {import('./tasks.js').TaskSpec} TaskSpec
 * @typedef {import('./images.js').Pixels} Pixels
 * @typedef {import('./images.js').RGBAImage} RGBAImage
 * @typedef {import('./manifest.js').GraphDoc} GraphDoc
 * @typedef {import('./manifest.js').Manifest} Manifest
 * @typedef {Pixels | Uint8Array | string | Tensor} ImageInput an ImageData-like object, PNG bytes, a PNG path (Node), or a float tensor in [-1, 1]
 */

/**
 * @typedef {object} OpenOptions
 * @property {boolean} [verify] re-hash every file against the manifest before its session is made (default true)
 * @property {any} [ort] the ONNX Runtime module to use (default: onnxruntime-node in Node, onnxruntime-web elsewhere)
 * @property {'node' | 'web'} [platform] how `ort` takes a graph: 'node' from checked files, 'web' from checked bytes (default: that of the default module)
 * @property {string[]} [executionProviders] e.g. `['webgpu', 'wasm']` (default `['cpu']` in Node, `['wasm']` on the web)
 * @property {number} [threads] intra-op threads (default: ONNX Runtime's)
 * @property {typeof fetch} [fetch] the fetch function for URL packages
 */

/**
 * @typedef {object} GenerateOptions
 * @property {string | string[]} [prompt] the prompt (or one per image)
 * @property {string | string[] | null} [negativePrompt] what the evaluations without the prompt read instead of the empty prompt (one, or one per image); text-guided tasks only
 * @property {ImageInput | null} [image] condition image (edit, sr, inpaint)
 * @property {ImageInput | null} [mask] mask (white = region to fill)
 * @property {number | null} [steps]
 * @property {string} [scheduler] ddim | euler | euler-a | dpmpp-2m | dpmpp-2m-karras (default ddim)
 * @property {number | null} [guidance] text guidance scale
 * @property {number | null} [imageGuidance] image guidance scale (dual-guidance tasks)
 * @property {number | null} [strength] image tasks: start from the condition image noised to this fraction
 * @property {number} [seed] noise seed, an integer in [0, 2**32 - 1] (default 0)
 * @property {number} [numImages] images per prompt (default 1)
 * @property {boolean} [resize] resample inputs of another size (bicubic) instead of refusing
 * @property {import('./sampler.js').StepCallback | null} [onStep] after each step: `{ step, steps, timestep, latents }`; may return replacement latents
 */

/** A graph's batch: fixed (static export) or null (dynamic axis). */
class Batching {
  /** @param {number | null} size */
  constructor(size) {
    this.size = size;
  }

  /**
   * `fn(...chunks)` over rows of `tensors` in chunks of the graph's batch (last chunk padded).
   * @template {{ data: ArrayLike<any> & { slice(a: number, b: number): any }, shape: number[] }} T
   * @param {(...chunks: T[]) => Promise<Tensor>} fn
   * @param {T[]} tensors
   * @returns {Promise<Tensor>}
   */
  async run(fn, tensors) {
    const n = tensors[0].shape[0];
    if (this.size === null || this.size === n) return fn(...tensors);
    /** @type {Tensor[]} */
    const out = [];
    for (let start = 0; start < n; start += this.size) {
      const end = Math.min(start + this.size, n);
      const chunk = tensors.map((t) => {
        const row = t.data.length / t.shape[0];
        const idx = [];
        for (let r = start; r < start + /** @type {number} */ (this.size); r++) idx.push(Math.min(r, end - 1));
        const data = new /** @type {any} */ (t.data.constructor)(idx.length * row);
        idx.forEach((r, k) => data.set(t.data.slice(r * row, (r + 1) * row), k * row));
        return /** @type {T} */ ({ data, shape: [idx.length, ...t.shape.slice(1)] });
      });
      out.push(rows(await fn(...chunk), 0, end - start));
    }
    return concat(out, 0);
  }
}

/** float32 -> float16 bits (round to nearest even). @param {Float32Array} a */
function toHalf(a) {
  const out = new Uint16Array(a.length);
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  for (let i = 0; i < a.length; i++) {
    f32[0] = a[i];
    const x = u32[0];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) { out[i] = sign | 0x7c00 | (mant ? 0x200 : 0); continue; }
    let e = exp - 127 + 15;
    if (e >= 0x1f) { out[i] = sign | 0x7c00; continue; }
    if (e <= 0) {
      if (e < -10) { out[i] = sign; continue; }
      mant |= 0x800000;
      const shift = 14 - e;
      let h = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      if (rem > half || (rem === half && (h & 1))) h++;
      out[i] = sign | h;
      continue;
    }
    let h = (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
    out[i] = sign | h;
  }
  return out;
}

/** float16 bits -> float32. @param {Uint16Array} a */
function fromHalf(a) {
  return Float32Array.from(a, (h) => {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) return s * m * 2 ** -24;
    if (e === 31) return m ? NaN : s * Infinity;
    return s * (1 + m / 1024) * 2 ** (e - 15);
  });
}

/** An exported taskfold package opened for inference. Use {@link openPackage}. */
export class Package {
  /**
   * @param {PackageReader} reader
   * @param {OpenOptions} options
   */
  constructor(reader, options) {
    this.reader = reader;
    this.path = reader.name;
    /** @type {Manifest} */
    this.manifest = reader.manifest;
    this.ort = options.ort ?? ortDefault;
    /** @type {string} 'node': sessions from checked files; 'web': from checked bytes */
    this.platform = options.platform ?? ortPlatform;
    this.executionProviders = options.executionProviders ?? (this.platform === 'node' ? ['cpu'] : ['wasm']);
    this.threads = options.threads ?? null;
    this.verify = reader.verify;
    const formats = new Set(this.manifest.graphs.map((g) => g.format));
    if (!formats.has('onnx')) {
      throw new ConfigError(`package ${repr(this.path)} has no onnx graphs (it has: ${[...formats].sort().join(', ') || 'none'})`,
        're-export with `taskfold export --format onnx`');
    }
    const layouts = [...new Set(this.manifest.graphs.filter((g) => g.format === 'onnx').map((g) => g.layout ?? 'graphs'))].sort();
    this.layout = layouts.includes('adapters') ? 'adapters' : layouts[0];
    /** @type {Map<string, any>} */
    this.sessions = new Map();
    /** @type {Map<string, Promise<any>>} */
    this.pending = new Map();
    /** @type {import('./tokenizers.js').RuntimeTokenizer | null} */
    this.tokenizer = null;
    /** @type {Map<string, TaskSpec>} */
    this.specs = new Map();
    /** @type {string | null} a private folder for checked bytes a Node session reads (URL packages) */
    this.scratch = null;
  }

  // --- what the package holds ------------------------------------------------------------------

  /** Task names, in the manifest's order. */
  get tasks() {
    return Object.keys(this.manifest.tasks);
  }

  /** `[height, width]` in pixels of the images the package makes. @returns {[number, number]} */
  get imageSize() {
    return [this.manifest.sample.image_height, this.manifest.sample.image_width];
  }

  /** The manifest entry of task `name`. @param {string} name */
  task(name) {
    if (!Object.hasOwn(this.manifest.tasks, name)) throw new ConfigError(`unknown task ${repr(name)}; this package has: ${this.tasks.join(', ')}`);
    return this.manifest.tasks[name];
  }

  /** The task definition of `name`, as the package recorded it. @param {string} name */
  spec(name) {
    let s = this.specs.get(name);
    if (!s) {
      s = taskFromRecord(this.task(name));
      this.specs.set(name, s);
    }
    return s;
  }

  /**
   * The settings `generate` uses for `task`: each as given (not null), else the package's recommendation.
   * @param {string} task
   * @param {{ steps?: number | null, strength?: number | null, guidance?: number | null, imageGuidance?: number | null }} [given]
   */
  sampling(task, given = {}) {
    const spec = this.spec(task);
    return {
      steps: given.steps ?? spec.steps,
      strength: needsCondition(spec) ? (given.strength ?? spec.strength) : null,
      guidance: spec.guidance === 'none' ? null : (given.guidance ?? spec.guidance_scale),
      imageGuidance: spec.guidance === 'image_text' ? (given.imageGuidance ?? spec.image_guidance_scale) : null,
    };
  }

  /** The onnx graph entry of `task` in the package's layout. @param {string} task @returns {GraphDoc} */
  graph(task) {
    this.task(task);
    const g = this.manifest.graphs.find((x) => x.task === task && x.format === 'onnx' && (x.layout ?? 'graphs') === this.layout);
    if (!g) throw new ConfigError(`package ${repr(this.path)} has no onnx graph for task ${repr(task)}`, `re-export with \`taskfold export --format onnx --tasks ${task}\``);
    return g;
  }

  // --- sessions --------------------------------------------------------------------------------

  /**
   * An ONNX Runtime session for the checked graph `graphRel` whose external data lies at `locations`.
   * @param {string} graphRel
   * @param {Map<string, string>} locations external-data location (as the graph names it) -> package path
   * @param {string} level graph optimisation level
   */
  async createSession(graphRel, locations, level) {
    const ort = this.ort;
    /** @type {Record<string, any>} */
    const opts = { executionProviders: this.executionProviders, graphOptimizationLevel: level, logSeverityLevel: 3 };
    // Node: as the Python runtime's task graphs (weights shared between sessions), no pre-packed copy of the
    // weights — the same kernels, so the same numbers; the web: fully optimised and pre-packed (WASM's
    // kernels are several times slower without), within 1/255 of the Python runtime all the same
    if (level === 'extended' && this.platform === 'node') opts.extra = { session: { disable_prepacking: '1' } };
    if (this.platform !== 'node') opts.graphOptimizationLevel = 'all';
    if (this.threads) opts.intraOpNumThreads = this.threads;
    try {
      if (this.platform === 'node') {
        let path;
        if (this.reader.source instanceof DirSource) path = /** @type {string} */ (await this.reader.path(graphRel));
        else path = await this.scratchCopy([graphRel, ...locations.values()], graphRel);
        return await ort.InferenceSession.create(path, opts);
      }
      const model = await this.reader.take(graphRel);
      opts.externalData = [];
      for (const [location, rel] of locations) opts.externalData.push({ path: location, data: await this.checkedBytes(rel) });
      return await ort.InferenceSession.create(model, opts);
    } catch (e) {
      if (e instanceof PackageError) throw e;
      const first = String(/** @type {Error} */ (e).message ?? e).split('\n')[0].slice(0, 300);
      throw new PackageError(`onnxruntime cannot load ${graphRel.split('/').pop()}: ${first}`, '`taskfold verify PKG` checks the package\'s files');
    }
  }

  /**
   * Checked bytes of a weights file, kept while the package is open (several graphs share it).
   * @param {string} rel
   */
  async checkedBytes(rel) {
    const cached = this.reader.bytes.get(rel);
    if (cached) return cached;
    const data = await this.reader.readBytes(rel);
    this.reader.bytes.set(rel, data);
    return data;
  }

  /**
   * The checked bytes of `rels` written into a private temporary folder (Node reading a URL package:
   * onnxruntime-node reads external data from files only); the graph's path there.
   * @param {string[]} rels
   * @param {string} graphRel
   */
  async scratchCopy(rels, graphRel) {
    const fs = await import('node:fs/promises');
    const os = await import('node:os');
    const path = await import('node:path');
    if (this.scratch === null) {
      this.scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'taskfold-js-'));
      await removeAtExit(this.scratch);
    }
    for (const rel of rels) {
      const target = path.join(this.scratch, ...rel.split('/'));
      await fs.mkdir(path.dirname(target), { recursive: true });
      await fs.writeFile(target, rel === graphRel ? await this.reader.take(rel) : await this.checkedBytes(rel), { flag: 'w', mode: 0o600 });
    }
    return path.join(this.scratch, ...graphRel.split('/'));
  }

  /**
   * `key`'s session, made once (concurrent callers share the one being made).
   * @param {string} key
   * @param {() => Promise<any>} make
   */
  async once(key, make) {
    if (this.sessions.has(key)) return this.sessions.get(key);
    let p = this.pending.get(key);
    if (!p) {
      p = make();
      this.pending.set(key, p);
    }
    try {
      const v = await p;
      this.sessions.set(key, v);
      return v;
    } finally {
      this.pending.delete(key);
    }
  }

  /**
   * `fn(sample, timestep, encoder_hidden_states) -> noise` for `task`. Every file the graph reads is
   * confined, listed and checked (hashed with `verify`) before its session is created.
   * @param {string} task
   * @returns {Promise<(x: Tensor, t: Tensor, h: Tensor) => Promise<Tensor>>}
   */
  async unet(task) {
    return this.once(`unet:${task}`, async () => {
      const g = this.graph(task);
      const names = g.inputs.map((t) => t.name);
      if (names.join() !== UNET_INPUTS.join()) {
        throw new ConfigError(`task ${repr(task)}'s graph takes ${repr(names)}; the runtime's sampler drives graphs with ${repr(UNET_INPUTS)} (SDXL graphs need the app to supply text_embeds and time_ids)`,
          'run the graph (manifest graphs[].path) with onnxruntime directly');
      }
      const shape0 = g.inputs[0].shape[0];
      const batch = new Batching(typeof shape0 === 'number' ? shape0 : null);
      const dtype = g.inputs[0].dtype;
      const files = await this.reader.graphFiles(g);
      const { locations } = await this.reader.onnxFiles(g.path, `graph ${g.task}/${g.format}`);
      const taskTensors = g.adapter ? await this.loadTaskTensors(g) : new Map();  // hashed from the bytes parsed
      await this.reader.check(files.filter((f) => f !== g.adapter));
      // the graphs layout: one graph per task; the adapters layout: one shared graph, fully optimised
      const session = await this.once(`graph:${g.path}`, () => this.createSession(g.path, locations, this.layout === 'adapters' ? 'all' : 'extended'));
      const ort = this.ort;
      const out = session.outputNames[0];
      const takes = new Set(session.inputNames);
      const want = new Set([...UNET_INPUTS, ...taskTensors.keys()]);
      if (takes.size !== want.size || [...takes].some((n) => !want.has(n))) {
        const odd = [...takes, ...want].filter((n) => !(takes.has(n) && want.has(n))).sort();
        throw this.reader.fail(`graph ${g.task}/onnx: ${g.path} takes ${takes.size} inputs, the manifest names ${want.size} (first difference: ${repr(odd[0])})`);
      }
      /** @type {Record<string, any>} */
      const extra = {};
      for (const [name, t] of taskTensors) {
        const bytes = t.data.slice().buffer;
        extra[name] = new ort.Tensor(t.dtype, t.dtype === 'float16' ? new Uint16Array(bytes) : new Float32Array(bytes), t.shape);
      }
      const half = dtype === 'float16';
      const channels = Number(g.inputs[0].shape[1]);
      /** @type {(x: Tensor, t: Tensor, h: Tensor) => Promise<Tensor>} */
      const call = async (x, t, h) => {
        if (typeof channels === 'number' && x.shape[1] < channels) {  // the shared-graph form: padded to the widest task
          x = concat([x, { data: new Float32Array(x.shape[0] * (channels - x.shape[1]) * x.shape[2] * x.shape[3]), shape: [x.shape[0], channels - x.shape[1], x.shape[2], x.shape[3]] }], 1);
        }
        const feeds = {
          sample: new ort.Tensor(half ? 'float16' : 'float32', half ? toHalf(x.data) : x.data, x.shape),
          timestep: new ort.Tensor('float32', t.data, t.shape),
          encoder_hidden_states: new ort.Tensor(half ? 'float16' : 'float32', half ? toHalf(h.data) : h.data, h.shape),
          ...extra,
        };
        const res = (await session.run(feeds))[out];
        const data = half ? fromHalf(res.data) : Float32Array.from(res.data);
        return { data, shape: [...res.dims] };
      };
      return (/** @type {Tensor} */ x, /** @type {Tensor} */ t, /** @type {Tensor} */ h) => batch.run(call, [x, t, h]);
    });
  }

  /**
   * The task tensors of an adapters-layout graph entry, read from its `.safetensors` file (listed,
   * size- and hash-checked) and checked: exactly the entry's `task_tensors` (names, shapes, dtypes)
   * and the metadata of this task and backbone, so a file of another task or package is refused.
   * @param {GraphDoc} g
   */
  async loadTaskTensors(g) {
    const rel = /** @type {string} */ (g.adapter);
    const where = `graph ${g.task}/${g.format}`;
    if (rel.endsWith('.onnx_adapter')) {
      throw this.reader.fail(`${where}: ${repr(rel)} is an ONNX Runtime adapter, which this taskfold no longer reads (task tensors are a .safetensors file per task); re-export the package`);
    }
    if (!g.task_tensors || g.backbone_id === undefined) throw this.reader.fail(`${where}: the entry names no task_tensors and backbone_id for ${repr(rel)}`);
    let sizes = 0;
    for (const t of g.task_tensors) {
      if (!t.shape.every((d) => typeof d === 'number') || !['float32', 'float16'].includes(t.dtype)) {
        throw this.reader.fail(`${where}: task tensor ${repr(t.name)} is ${t.dtype} ${repr(t.shape)}; task tensors are float32 or float16 of a fixed shape`);
      }
      sizes += /** @type {number[]} */ (t.shape).reduce((a, b) => a * b, 1) * (t.dtype === 'float16' ? 2 : 4);
    }
    const data = await this.reader.readBytes(rel, where, 8 + bound('bytes.adapter_header') + sizes);
    try {
      return readTensors(data, rel, g.task_tensors, { format: TASK_FILE_FORMAT, task: g.task, backbone_id: String(g.backbone_id) });
    } catch (e) {
      if (e instanceof PackageError) throw this.reader.fail(e.message);
      throw e;
    }
  }

  /**
   * A text-encoder or codec graph as `fn(input) -> first output` (checked before its session).
   * @param {string} key
   * @param {string} folder
   * @param {import('./manifest.js').ComponentDoc} rec
   * @returns {Promise<(x: { data: any, shape: number[] }) => Promise<Tensor>>}
   */
  async component(key, folder, rec) {
    return this.once(`component:${key}`, async () => {
      const files = await this.reader.componentFiles(folder, rec);
      const rel = `${folder}/${rec.file}`;
      const { locations } = await this.reader.onnxFiles(rel, rel);
      await this.reader.check(files);
      const session = await this.once(`graph:${rel}`, () => this.createSession(rel, locations, 'all'));
      const shape0 = rec.inputs[0].shape[0];
      const batch = new Batching(typeof shape0 === 'number' ? shape0 : null);
      const name = rec.inputs[0].name;
      const type = rec.inputs[0].dtype;
      const ort = this.ort;
      const out = session.outputNames[0];
      /** @param {{ data: any, shape: number[] }} a */
      const call = async (a) => {
        const res = (await session.run({ [name]: new ort.Tensor(type, a.data, a.shape) }))[out];
        return { data: res.type === 'float16' ? fromHalf(res.data) : Float32Array.from(res.data), shape: [...res.dims] };
      };
      return (/** @type {{ data: any, shape: number[] }} */ x) => batch.run(call, [/** @type {any} */ (x)]);
    });
  }

  // --- text and images -------------------------------------------------------------------------

  /** The package's tokenizer (read, checked, admitted and built once). */
  async loadTokenizer() {
    if (this.tokenizer === null) this.tokenizer = await this.reader.tokenizer();
    return this.tokenizer;
  }

  /**
   * What every task shares, checked before any session (as the Python runtime does at open): the
   * tokenizer (admitted and built) and the text encoder and codec graphs (admitted, listed, hashed).
   */
  async checkShared() {
    const te = this.manifest.text_encoder;
    if (te) {
      await this.loadTokenizer();
      await this.reader.componentFiles('text_encoder', te.graph);
    }
    for (const rec of Object.values(this.manifest.codec.graphs ?? {})) await this.reader.componentFiles('codec', rec);
  }

  /**
   * `[B, L, D]` text-encoder states for `prompts`.
   * @param {string[]} prompts
   * @returns {Promise<Tensor>}
   */
  async encodeText(prompts) {
    const te = this.manifest.text_encoder;
    if (!te) {
      throw new PackageError(`package ${repr(this.path)} has no text encoder; its graphs take encoder_hidden_states from the app`,
        'call Package.unet(task) directly');
    }
    const tok = await this.loadTokenizer();
    const encoder = await this.component('text_encoder', 'text_encoder', te.graph);
    return encoder({ data: tok.encode(prompts), shape: [prompts.length, tok.maxLength] });
  }

  /**
   * @param {string} which
   * @param {Tensor} x
   */
  async codec(which, x) {
    const codec = this.manifest.codec;
    if (codec.kind === 'identity') return x;
    const rec = (codec.graphs ?? {})[which];
    if (!rec) {
      throw new PackageError(`package ${repr(this.path)} has a ${codec.kind} codec but no ${which} graph`,
        're-export from a model folder that holds its codec (codec.json / vae/)');
    }
    return (await this.component(which, 'codec', rec))(x);
  }

  /** Images `[B, 3, H, W]` in [-1, 1] to the UNet's sample space. @param {Tensor} images */
  encodeImages(images) {
    return this.codec('vae_encoder', images);
  }

  /** UNet samples to images `[B, 3, H, W]` in [-1, 1] (clipped). @param {Tensor} latents */
  async decode(latents) {
    const x = await this.codec('vae_decoder', latents);
    return { data: x.data.map((v) => Math.min(Math.max(v, -1), 1)), shape: x.shape };
  }

  /**
   * Pixels of an input (ImageData-like, PNG bytes, or a PNG path in Node).
   * @param {Pixels | Uint8Array | string} input
   * @param {string} what
   * @returns {Promise<Pixels>}
   */
  async pixels(input, what) {
    if (typeof input === 'string') {
      if (typeof process === 'undefined') throw new ConfigError(`${what} ${repr(input)}: file paths are read in Node only; give ImageData or PNG bytes`);
      const fs = await import('node:fs/promises');
      let bytes;
      try {
        const st = await fs.stat(input);
        if (!st.isFile()) throw new Error('not a file');
        bytes = new Uint8Array(await fs.readFile(input));
      } catch {
        throw new ConfigError(`${what} ${repr(input)} does not exist or is not a file`);
      }
      return decodePng(bytes, `${what} ${repr(input)}`);
    }
    if (input instanceof Uint8Array && !('width' in input)) return decodePng(input, what);
    return /** @type {Pixels} */ (input);
  }

  /** @param {any} v */
  static isTensor(v) {
    return v !== null && typeof v === 'object' && Array.isArray(v.shape) && v.data instanceof Float32Array;
  }

  /**
   * `[C, H, W]` or `[B, C, H, W]` at the package's image size, as `[B, C, H, W]`.
   * @param {Tensor} a
   * @param {number} channels
   * @param {string} what
   * @param {string} values
   * @returns {Tensor}
   */
  batchTensor(a, channels, what, values) {
    const shape = a.shape.length === 3 ? [1, ...a.shape] : a.shape;
    const [h, w] = this.imageSize;
    if (shape.length !== 4 || shape[1] !== channels || shape[2] !== h || shape[3] !== w) {
      throw new ConfigError(`${what} has shape ${repr(a.shape)}; expected [B, ${channels}, ${h}, ${w}]${values}`);
    }
    return { data: a.data, shape };
  }

  /**
   * A condition image as `[B, 3, H, W]` (`load_condition`).
   * @param {string} task
   * @param {ImageInput} image
   * @param {boolean} [resize]
   */
  async loadCondition(task, image, resize = false) {
    if (Package.isTensor(image)) return this.batchTensor(/** @type {Tensor} */ (image), 3, 'condition array', ' in [-1, 1]');
    const im = await this.pixels(/** @type {any} */ (image), 'condition image');
    const [h, w] = this.imageSize;
    const scale = this.spec(task).condition_scale;
    const also = scale > 1 ? /** @type {[number, number]} */ ([Math.floor(w / scale), Math.floor(h / scale)]) : null;
    return toChw(toRgb(fitImage(toRgb(im), [w, h], 'condition image', { also, resize })));
  }

  /**
   * A mask as `[B, 1, H, W]` (`load_mask`).
   * @param {ImageInput} mask
   * @param {boolean} [resize]
   */
  async loadMask(mask, resize = false) {
    if (Package.isTensor(mask)) return this.batchTensor(/** @type {Tensor} */ (mask), 1, 'mask array', '');
    const im = await this.pixels(/** @type {any} */ (mask), 'mask');
    const [h, w] = this.imageSize;
    return maskToTensor(fitMask(im, [w, h], resize));
  }

  // --- generate --------------------------------------------------------------------------------

  /**
   * What the sampler drives for `task`: its graph and the package's text encoder and codec.
   * @param {string} task
   * @returns {Promise<import('./sampler.js').Model>}
   */
  async model(task) {
    const shape0 = this.graph(task).inputs[0].shape[0];
    const codec = this.manifest.codec;
    const unet = await this.unet(task);
    return {
      unet,
      encodeText: (prompts) => this.encodeText(prompts),
      encodeImages: (x) => this.encodeImages(x),
      decode: (x) => this.decode(x),
      maxBatch: typeof shape0 === 'number' ? shape0 : null,
      scalingFactor: Number(codec.scaling_factor),
      shiftFactor: Number(codec.shift_factor ?? 0.0),
    };
  }

  /**
   * Images `[B, 3, H, W]` in [-1, 1] for `task` (as the Python runtime's `generate` returns them).
   * @param {string} task
   * @param {GenerateOptions} [options]
   * @returns {Promise<Tensor>}
   */
  async sample(task, options = {}) {
    const spec = this.spec(task);
    const { image = null, mask = null, scheduler = 'ddim', seed = 0, resize = false, negativePrompt = null, numImages = 1 } = options;
    const steps = options.steps ?? spec.steps;
    const strength = options.strength ?? spec.strength;
    if (!Number.isInteger(numImages) || numImages < 1) throw new ConfigError(`numImages must be a positive integer, got ${repr(numImages)}`);
    const given = options.prompt ?? '';
    const prompts = checkOptions(given, steps, scheduler, seed, options.guidance, options.imageGuidance).flatMap((p) => Array(numImages).fill(p));
    const negative = negativePrompt === null || typeof negativePrompt === 'string' ? negativePrompt
      : Array.isArray(negativePrompt) && negativePrompt.length === prompts.length / numImages ? negativePrompt.flatMap((p) => Array(numImages).fill(p)) : negativePrompt;
    checkInputs(spec, image, mask, strength);
    const b = prompts.length;
    // one image for every prompt, or one per prompt; each row then repeated numImages times in place (p, p, q, q)
    const each = (/** @type {Tensor} */ t) => (numImages === 1 ? t : concat(Array.from({ length: t.shape[0] * numImages }, (_, r) => rows(t, Math.floor(r / numImages), Math.floor(r / numImages) + 1)), 0));
    const cond = needsCondition(spec) ? each(repeatRows(await this.loadCondition(task, /** @type {ImageInput} */ (image), resize), b / numImages, 'condition image')) : null;
    const msk = needsMask(spec) ? each(repeatRows(await this.loadMask(/** @type {ImageInput} */ (mask), resize), b / numImages, 'mask')) : null;
    checkNegative(spec, negative, b);
    const model = await this.model(task);  // sessions (and integrity checks) before any sampling work
    const { source: _, ...schedulerConfig } = this.manifest.scheduler;
    const s = this.manifest.sample;
    return sample(model, spec, prompts, {
      schedulerConfig, latentShape: [this.manifest.codec.latent_channels, s.height, s.width], condition: cond, mask: msk,
      steps, scheduler, guidanceScale: options.guidance ?? null, imageGuidanceScale: options.imageGuidance ?? null, seed, strength,
      negativePrompts: negative, onStep: options.onStep ?? null,
    });
  }

  /**
   * RGBA images for `task`, one per prompt and image (`ImageData`-shaped).
   * @param {string} task
   * @param {GenerateOptions} [options]
   * @returns {Promise<RGBAImage[]>}
   */
  async generate(task, options = {}) {
    return toRgba(await this.sample(task, options));
  }

  /**
   * One-line warnings about `prompt` for `task` (a prompt given to a task that reads no text, words the
   * vocabulary lacks, a prompt longer than the encoder reads).
   * @param {string} task
   * @param {string} prompt
   */
  async promptWarnings(task, prompt) {
    const spec = this.spec(task);
    if (!spec.uses_text) return prompt.trim() ? [`task ${repr(task)} reads no text; the prompt ${repr(short(prompt))} is ignored`] : [];
    if (!this.manifest.text_encoder || !prompt) return [];
    const tok = await this.loadTokenizer();
    const [n, unknown] = tok.untruncated(prompt);
    const out = [];
    const named = 20;
    if (unknown.length) {
      const more = unknown.length > named ? ` and ${(unknown.length - named).toLocaleString('en-US')} more` : '';
      out.push(`prompt word(s) ${unknown.slice(0, named).map(repr).join(', ')}${more} are not in the text encoder's vocabulary (encoded as unknown)`);
    }
    if (n > tok.maxLength) out.push(`the prompt is ${n} tokens; the text encoder reads the first ${tok.maxLength}`);
    return out;
  }

  /** Drop every session and cached byte (and the scratch folder of a URL package in Node). */
  async close() {
    for (const s of this.sessions.values()) if (s && typeof s.release === 'function') await s.release().catch(() => {});
    this.sessions.clear();
    this.reader.bytes.clear();
    if (this.scratch !== null) {
      const fs = await import('node:fs/promises');
      await fs.rm(this.scratch, { recursive: true, force: true });
      scratchFolders.delete(this.scratch);
      this.scratch = null;
    }
  }
}

/** Scratch folders not yet removed by `close()`: a process that ends without closing (an error on the way, a
 * caller that forgot) still removes them when it exits, so copies of model files do not pile up in the
 * temporary folder. */
const scratchFolders = new Set();
let exitHook = false;

/** @param {string} folder */
async function removeAtExit(folder) {
  scratchFolders.add(folder);
  if (exitHook) return;
  exitHook = true;
  const { rmSync } = await import('node:fs');
  process.once('exit', () => {
    for (const f of scratchFolders) {
      try { rmSync(f, { recursive: true, force: true }); } catch { /* the process is ending; nothing to report to */ }
    }
  });
}

/**
 * @param {Tensor} a
 * @param {number} b
 * @param {string} what
 */
function repeatRows(a, b, what) {
  if (a.shape[0] === b) return a;
  if (a.shape[0] !== 1) throw new ConfigError(`${what} has ${a.shape[0]} rows for ${b} prompts; give one, or one per prompt`);
  return concat(Array(b).fill(a), 0);
}

/** @param {string} text @param {number} [limit] */
function short(text, limit = 60) {
  return text.length <= limit ? text : `${text.slice(0, limit - 1)}…`;
}

/**
 * Open an exported package: a folder (Node) or the URL of its folder (Node, browsers). Its manifest
 * is read and validated now; files are checked as sessions need them.
 * @param {string | URL} location
 * @param {OpenOptions} [options]
 */
export async function openPackage(location, options = {}) {
  const reader = await PackageReader.open(location, { verify: options.verify ?? true, fetch: options.fetch });
  const pkg = new Package(reader, options);
  await pkg.checkShared();
  return pkg;
}

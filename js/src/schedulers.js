/**
 * Sampling schedulers (mirrors `runtime/schedulers.py` step for step): DDIM, Euler, Euler
 * ancestral, DPM-Solver++ 2M with and without Karras sigmas.
 *
 * Every table and every step is evaluated in the precision the Python module uses: the beta and
 * abar tables in float32 (the float64-accumulated cumulative product reproduced), each step's
 * arithmetic in float32 with the operations in the same order (`Math.fround` after every
 * operation: a float32 result of +, -, *, / or sqrt on float32 operands computed in float64 and
 * rounded once is the correctly rounded float32 result), timestep grids and `interp` in float64.
 * Transcendental functions (log, exp, pow) may differ from NumPy's by one float32 ulp.
 *
 * Steps are addressed by their index `i` in `timesteps`, as in Python.
 */

import { ConfigError, repr } from './errors.js';
import { normal } from './noise.js';

export const SCHEDULERS = ['ddim', 'euler', 'euler-a', 'dpmpp-2m', 'dpmpp-2m-karras'];
export const BETA_SCHEDULES = ['linear', 'scaled_linear', 'squaredcos_cap_v2'];
export const PREDICTION_TYPES = ['epsilon', 'v_prediction', 'sample'];
export const TIMESTEP_SPACINGS = ['leading', 'linspace', 'trailing'];
/** Spacing used when the config names none, per scheduler (the diffusers class defaults). */
export const DEFAULT_SPACING = /** @type {Record<string, string>} */ ({
  ddim: 'leading', euler: 'linspace', 'euler-a': 'linspace', 'dpmpp-2m': 'linspace', 'dpmpp-2m-karras': 'linspace',
});

const f = Math.fround;

/**
 * @param {string} key
 * @param {any} value
 * @param {readonly any[]} allowed
 */
function oneOf(key, value, allowed) {
  if (!allowed.includes(value)) throw new ConfigError(`${key} ${repr(value)} is not supported; expected one of: ${allowed.join(', ')}`);
}

// --- config ------------------------------------------------------------------------------------

/**
 * @typedef {{ num_train_timesteps: number, beta_start: number, beta_end: number, beta_schedule: string,
 *   prediction_type: string, timestep_spacing: string | null, steps_offset: number, clip_sample: boolean,
 *   set_alpha_to_one: boolean }} SchedulerConfig
 */

/** @type {SchedulerConfig} Stable Diffusion 1.5's */
export const DEFAULT_CONFIG = Object.freeze({
  num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear',
  prediction_type: 'epsilon', timestep_spacing: null, steps_offset: 1, clip_sample: false, set_alpha_to_one: false,
});

const FIELD_TYPES = /** @type {Record<string, 'int' | 'float' | 'str' | 'bool'>} */ ({
  num_train_timesteps: 'int', beta_start: 'float', beta_end: 'float', beta_schedule: 'str', prediction_type: 'str',
  timestep_spacing: 'str', steps_offset: 'int', clip_sample: 'bool', set_alpha_to_one: 'bool',
});
const TYPE_NAMES = { int: 'int', float: 'float', str: 'str', bool: 'bool' };
/** diffusers keys whose non-default values are not implemented. */
const NEUTRAL = /** @type {Record<string, any>} */ ({
  trained_betas: null, rescale_betas_zero_snr: false, thresholding: false, use_karras_sigmas: false,
  use_exponential_sigmas: false, use_beta_sigmas: false, interpolation_type: 'linear', timestep_type: 'discrete',
  final_sigmas_type: 'zero',
});

/**
 * The config checked (`SchedulerConfig.__post_init__`).
 * @param {SchedulerConfig} c
 * @returns {SchedulerConfig}
 */
export function checkSchedulerConfig(c) {
  if (!Number.isInteger(c.num_train_timesteps) || c.num_train_timesteps < 2) {
    throw new ConfigError(`num_train_timesteps ${repr(c.num_train_timesteps)} must be an integer >= 2`);
  }
  if (!(typeof c.beta_start === 'number' && typeof c.beta_end === 'number' && c.beta_start > 0 && c.beta_start <= c.beta_end && c.beta_end < 1)) {
    throw new ConfigError(`beta_start ${repr(c.beta_start)} and beta_end ${repr(c.beta_end)} must satisfy 0 < beta_start <= beta_end < 1`);
  }
  oneOf('beta_schedule', c.beta_schedule, BETA_SCHEDULES);
  oneOf('prediction_type', c.prediction_type, PREDICTION_TYPES);
  if (c.timestep_spacing !== null) oneOf('timestep_spacing', c.timestep_spacing, TIMESTEP_SPACINGS);
  if (!Number.isInteger(c.steps_offset) || c.steps_offset < 0 || c.steps_offset >= c.num_train_timesteps) {
    throw new ConfigError(`steps_offset ${repr(c.steps_offset)} must be an integer in [0, ${c.num_train_timesteps})`);
  }
  for (const key of /** @type {const} */ (['clip_sample', 'set_alpha_to_one'])) {
    if (typeof c[key] !== 'boolean') throw new ConfigError(`${key} ${repr(c[key])} must be true or false`);
  }
  return Object.freeze(c);
}

/**
 * Read a diffusers `scheduler_config.json` dict (`SchedulerConfig.from_diffusers_config`).
 * @param {Record<string, any>} config
 * @returns {SchedulerConfig}
 */
export function configFromDiffusers(config) {
  for (const [key, neutral] of Object.entries(NEUTRAL)) {
    if (key in config && JSON.stringify(config[key]) !== JSON.stringify(neutral)) {
      throw new ConfigError(`${key} ${repr(config[key])} is not supported; only ${repr(neutral)} is implemented`);
    }
  }
  if (config.clip_sample && (config.clip_sample_range ?? 1.0) !== 1.0) {
    throw new ConfigError(`clip_sample_range ${repr(config.clip_sample_range)} is not supported; only 1.0 is implemented`);
  }
  /** @type {Record<string, any>} */
  const values = { ...DEFAULT_CONFIG };
  for (const [key, kind] of Object.entries(FIELD_TYPES)) {
    if (!(key in config)) continue;
    const v = config[key];
    const ok = kind === 'int' ? Number.isInteger(v) : kind === 'float' ? typeof v === 'number'
      : kind === 'str' ? typeof v === 'string' : typeof v === 'boolean';
    if (!ok) throw new ConfigError(`${key} ${repr(v)} must be of type ${TYPE_NAMES[kind]}`);
    values[key] = v;
  }
  return checkSchedulerConfig(/** @type {SchedulerConfig} */ (values));
}

// --- noise schedule ------------------------------------------------------------------------------

/**
 * float32 `linspace` rounded as `torch.linspace` rounds it (float32 step; first half from the
 * start, second half from the end; one rounding each).
 * @param {number} start
 * @param {number} end
 * @param {number} n
 */
function torchLinspaceFloat32(start, end, n) {
  const s = f(start);
  const e = f(end);
  const step = f(f(e - s) / f(n - 1));
  const out = new Float32Array(n);
  const half = Math.floor(n / 2);
  for (let i = 0; i < n; i++) out[i] = i < half ? s + step * i : e - step * (n - 1 - i);
  return out;
}

/**
 * Training betas, float32 `[num_train_timesteps]`.
 * @param {SchedulerConfig} c
 */
export function betas(c) {
  const n = c.num_train_timesteps;
  if (c.beta_schedule === 'linear') return torchLinspaceFloat32(c.beta_start, c.beta_end, n);
  if (c.beta_schedule === 'scaled_linear') {
    const r = torchLinspaceFloat32(Math.sqrt(c.beta_start), Math.sqrt(c.beta_end), n);
    return r.map((v) => v * v);
  }
  const abar = new Float64Array(n + 1);
  for (let i = 0; i <= n; i++) abar[i] = Math.cos((i / n + 0.008) / 1.008 * Math.PI / 2) ** 2;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.min(1.0 - abar[i + 1] / abar[i], 0.999);
  return out;
}

/**
 * `abar_t = prod_{s<=t} (1 - beta_s)`, float32, accumulated in float64.
 * @param {SchedulerConfig} c
 */
export function alphasCumprod(c) {
  const b = betas(c);
  const out = new Float32Array(b.length);
  let acc = 1.0;
  for (let i = 0; i < b.length; i++) {
    acc *= f(1 - b[i]);
    out[i] = acc;
  }
  return out;
}

/** NumPy's `round` (half to even). @param {number} x */
export function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * `np.linspace(start, stop, num)` in float64.
 * @param {number} start
 * @param {number} stop
 * @param {number} num
 */
function linspace(start, stop, num) {
  const out = new Float64Array(num);
  if (num === 1) {
    out[0] = start;
    return out;
  }
  const step = (stop - start) / (num - 1);
  for (let i = 0; i < num; i++) out[i] = i * step + start;
  out[num - 1] = stop;
  return out;
}

/**
 * `np.arange(start, stop, step)` for floats, filled as NumPy fills it (`start + i * delta`, with
 * `delta = (start + step) - start`).
 * @param {number} start
 * @param {number} stop
 * @param {number} step
 */
function arangeFloat(start, stop, step) {
  const len = Math.max(0, Math.ceil((stop - start) / step));
  const out = new Float64Array(len);
  const delta = (start + step) - start;
  for (let i = 0; i < len; i++) out[i] = i === 0 ? start : i === 1 ? start + step : start + i * delta;
  return out;
}

/**
 * `np.interp(x, arange(len(fp)), fp)` in float64.
 * @param {number} x
 * @param {ArrayLike<number>} fp
 */
function interpGrid(x, fp) {
  const n = fp.length;
  if (Number.isNaN(x)) return NaN;
  if (x >= n - 1) return fp[n - 1];
  if (x <= 0) return fp[0];
  const j = Math.floor(x);
  if (j === x) return fp[j];
  const slope = (fp[j + 1] - fp[j]) / 1;
  return slope * (x - j) + fp[j];
}

/**
 * Training timesteps visited by an `n`-step sampler, descending, float64 (`_spaced_timesteps`).
 * @param {SchedulerConfig} c
 * @param {string} spacing
 * @param {number} n
 * @param {boolean} integer
 */
function spacedTimesteps(c, spacing, n, integer) {
  const T = c.num_train_timesteps;
  if (!Number.isInteger(n) || n < 1 || n > T) throw new ConfigError(`num_inference_steps ${repr(n)} must be an integer in [1, ${T}]`);
  const out = new Float64Array(n);
  if (spacing === 'leading') {
    for (let k = 0; k < n; k++) out[k] = (n - 1 - k) * Math.floor(T / n) + c.steps_offset;
  } else if (spacing === 'linspace') {
    const lin = linspace(0, T - 1, n).reverse();
    for (let k = 0; k < n; k++) out[k] = integer ? roundHalfEven(lin[k]) : f(lin[k]);
  } else {
    const a = arangeFloat(T, 0, -T / n);
    for (let k = 0; k < n; k++) out[k] = roundHalfEven(a[k]) - 1;
  }
  return out;
}

/**
 * @param {number} i
 * @param {number} n
 */
function checkIndex(i, n) {
  if (!(i >= 0 && i < n)) throw new RangeError(`step index ${i} is outside [0, ${n})`);
  return i;
}

/**
 * Predicted clean latent and noise from the model output, in float32 (`_x0_and_eps`).
 * @param {string} kind
 * @param {Float32Array} out
 * @param {Float32Array} x
 * @param {number} abarT
 * @returns {[Float32Array, Float32Array]}
 */
function x0AndEps(kind, out, x, abarT) {
  const a = f(Math.sqrt(abarT));
  const b = f(Math.sqrt(f(1 - abarT)));
  const n = x.length;
  const x0 = new Float32Array(n);
  if (kind === 'epsilon') {
    for (let k = 0; k < n; k++) x0[k] = f(x[k] - f(b * out[k])) / a;
    return [x0, out];
  }
  const eps = new Float32Array(n);
  if (kind === 'v_prediction') {
    for (let k = 0; k < n; k++) {
      x0[k] = f(a * x[k]) - f(b * out[k]);
      eps[k] = f(a * out[k]) + f(b * x[k]);
    }
    return [x0, eps];
  }
  for (let k = 0; k < n; k++) eps[k] = f(x[k] - f(a * out[k])) / b;
  return [out, eps];
}

/** @param {Float32Array} a */
function clip1(a) {
  for (let k = 0; k < a.length; k++) a[k] = Math.min(Math.max(a[k], -1), 1);
  return a;
}

/**
 * @typedef {import('./noise.js').NoiseSource} NoiseSource
 * @typedef {{ name: string, spacing: string, numInferenceSteps: number, timesteps: Float32Array, initNoiseSigma: number,
 *   scaleModelInput(x: Float32Array, i: number): Float32Array,
 *   step(out: Float32Array, i: number, x: Float32Array, source?: NoiseSource | null): Float32Array,
 *   addNoiseAt(x0: Float32Array, noise: Float32Array, i: number): Float32Array }} Scheduler
 */

// --- schedulers ----------------------------------------------------------------------------------

/** DDIM (Song et al. 2021, Eq. 12), as `DDIMScheduler`. @implements {Scheduler} */
export class DDIMScheduler {
  /**
   * @param {SchedulerConfig} config
   * @param {number} numInferenceSteps
   * @param {{ eta?: number }} [options]
   */
  constructor(config, numInferenceSteps, { eta = 0.0 } = {}) {
    if (!(eta >= 0.0)) throw new ConfigError(`eta ${repr(eta)} must be >= 0`);
    this.name = 'ddim';
    this.initNoiseSigma = 1.0;
    this.config = config;
    this.eta = eta;
    this.spacing = config.timestep_spacing ?? DEFAULT_SPACING[this.name];
    this.numInferenceSteps = numInferenceSteps;
    this.alphasCumprod = alphasCumprod(config);
    const steps = spacedTimesteps(config, this.spacing, numInferenceSteps, true);
    const max = Math.max(...steps);
    if (max >= config.num_train_timesteps) {
      throw new ConfigError(`${numInferenceSteps} '${this.spacing}' steps with steps_offset ${config.steps_offset} reach timestep ${max}, past the last training timestep ${config.num_train_timesteps - 1}`);
    }
    this.steps = Array.from(steps);
    this.timesteps = Float32Array.from(steps);
    this.finalAbar = config.set_alpha_to_one ? 1.0 : this.alphasCumprod[0];
  }

  /** @param {number} t */
  abar(t) {
    return t >= 0 ? this.alphasCumprod[t] : this.finalAbar;
  }

  /** DDIM feeds the latent unscaled. @param {Float32Array} x @param {number} i */
  scaleModelInput(x, i) {
    checkIndex(i, this.numInferenceSteps);
    return x;
  }

  /**
   * The latent at the previous timestep; `source` is drawn only when `eta > 0`.
   * @param {Float32Array} out
   * @param {number} i
   * @param {Float32Array} x
   * @param {NoiseSource | null} [source]
   */
  step(out, i, x, source = null) {
    const t = this.steps[checkIndex(i, this.numInferenceSteps)];
    const abarT = this.abar(t);
    const abarPrev = this.abar(t - Math.floor(this.config.num_train_timesteps / this.numInferenceSteps));
    const [x0, eps] = x0AndEps(this.config.prediction_type, out, x, abarT);
    if (this.config.clip_sample) clip1(x0);
    const variance = f(f(f(1 - abarPrev) / f(1 - abarT)) * f(1 - f(abarT / abarPrev)));
    const sigma = f(f(this.eta) * f(Math.sqrt(variance)));
    const a = f(Math.sqrt(abarPrev));
    const b = f(Math.sqrt(f(f(1 - abarPrev) - f(sigma * sigma))));
    const prev = new Float32Array(x.length);
    for (let k = 0; k < x.length; k++) prev[k] = f(a * x0[k]) + f(b * eps[k]);
    if (this.eta > 0) {
      if (!source) throw new ConfigError('DDIM with eta > 0 needs a noise source');
      const z = normal(source, x.length);
      for (let k = 0; k < x.length; k++) prev[k] = prev[k] + f(sigma * z[k]);
    }
    return prev;
  }

  /** @param {Float32Array} x0 @param {Float32Array} noise @param {number} i */
  addNoiseAt(x0, noise, i) {
    const t = this.timesteps[checkIndex(i, this.numInferenceSteps)];
    const abar = this.alphasCumprod[t];
    const a = f(Math.sqrt(abar));
    const b = f(Math.sqrt(f(1 - abar)));
    return x0.map((v, k) => f(a * v) + f(b * noise[k]));
  }
}

/** Euler's method on the probability-flow ODE in sigma space, as `EulerDiscreteScheduler`. @implements {Scheduler} */
export class EulerScheduler {
  /**
   * @param {SchedulerConfig} config
   * @param {number} numInferenceSteps
   * @param {{ eta?: number }} [options]
   */
  constructor(config, numInferenceSteps, { eta = 0.0 } = {}) {
    if (eta !== 0.0) throw new ConfigError(`eta ${repr(eta)} is a DDIM option; the Euler sampler is deterministic (eta 0)`);
    this.name = 'euler';
    this.config = config;
    this.spacing = config.timestep_spacing ?? DEFAULT_SPACING.euler;
    this.numInferenceSteps = numInferenceSteps;
    const abar = alphasCumprod(config);
    this.trainSigmas = abar.map((a) => Math.sqrt(f(f(1 - a) / a)));
    this.timesteps = Float32Array.from(spacedTimesteps(config, this.spacing, numInferenceSteps, false));
    this.sigmas = new Float32Array(numInferenceSteps + 1);
    for (let k = 0; k < numInferenceSteps; k++) this.sigmas[k] = this.sigmaAt(this.timesteps[k]);
    const top = Math.max(...this.sigmas);
    this.initNoiseSigma = this.spacing !== 'leading' ? top : f(Math.sqrt(f(f(top * top) + 1)));
  }

  /** float32 sigma at training timestep `t`, linear between integers, clamped. @param {number} t */
  sigmaAt(t) {
    return f(interpGrid(t, this.trainSigmas));
  }

  /** `x / sqrt(sigma_i^2 + 1)`. @param {Float32Array} x @param {number} i */
  scaleModelInput(x, i) {
    const s = this.sigmas[checkIndex(i, this.numInferenceSteps)];
    const d = f(Math.sqrt(f(f(s * s) + 1)));
    return x.map((v) => v / d);
  }

  /**
   * @param {string} kind
   * @param {Float32Array} out
   * @param {Float32Array} x
   * @param {number} sigma
   */
  static x0(kind, out, x, sigma) {
    if (kind === 'epsilon') return x.map((v, k) => v - f(sigma * out[k]));
    if (kind === 'v_prediction') {
      const c1 = f(-sigma / f(Math.sqrt(f(f(sigma * sigma) + 1))));
      const c2 = f(f(sigma * sigma) + 1);
      return x.map((v, k) => f(out[k] * c1) + f(v / c2));
    }
    return out;
  }

  /**
   * The latent at `sigma_{i+1}` (deterministic; `source` unused).
   * @param {Float32Array} out
   * @param {number} i
   * @param {Float32Array} x
   * @param {NoiseSource | null} [source]
   */
  // eslint-disable-next-line no-unused-vars
  step(out, i, x, source = null) {
    checkIndex(i, this.numInferenceSteps);
    const sigma = this.sigmas[i];
    const next = this.sigmas[i + 1];
    const x0 = EulerScheduler.x0(this.config.prediction_type, out, x, sigma);
    const dt = f(next - sigma);
    return x.map((v, k) => v + f(f(f(v - x0[k]) / sigma) * dt));
  }

  /** @param {Float32Array} x0 @param {Float32Array} noise @param {number} i */
  addNoiseAt(x0, noise, i) {
    const sigma = this.sigmaAt(this.timesteps[checkIndex(i, this.numInferenceSteps)]);
    return x0.map((v, k) => v + f(noise[k] * sigma));
  }
}

/** Euler ancestral, as `EulerAncestralDiscreteScheduler`: fresh noise of `sigma_up` every step. */
export class EulerAncestralScheduler extends EulerScheduler {
  /**
   * @param {SchedulerConfig} config
   * @param {number} numInferenceSteps
   * @param {{ eta?: number }} [options]
   */
  constructor(config, numInferenceSteps, options) {
    super(config, numInferenceSteps, options);
    this.name = 'euler-a';
  }

  /**
   * @param {Float32Array} out
   * @param {number} i
   * @param {Float32Array} x
   * @param {NoiseSource | null} [source] the sampler's seeded source (one draw of the latent's size per step)
   */
  step(out, i, x, source = null) {
    checkIndex(i, this.numInferenceSteps);
    const sigma = this.sigmas[i];
    const next = this.sigmas[i + 1];
    const kind = this.config.prediction_type;
    if (kind === 'sample') throw new ConfigError("euler-a does not implement prediction_type 'sample' (diffusers does not either)");
    const x0 = EulerScheduler.x0(kind, out, x, sigma);
    const s2 = f(sigma * sigma);
    const n2 = f(next * next);
    const up = f(Math.sqrt(f(f(n2 * f(s2 - n2)) / s2)));
    const down = f(Math.sqrt(f(n2 - f(up * up))));
    const dt = f(down - sigma);
    if (!source) throw new ConfigError('euler-a needs a noise source');
    const z = normal(source, x.length);
    return x.map((v, k) => f(v + f(f(f(v - x0[k]) / sigma) * dt)) + f(z[k] * up));
  }
}

/**
 * DPM-Solver++ (Lu et al. 2022), multistep, second order, midpoint rule, as diffusers'
 * `DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)`; `karras`: sigmas
 * spaced as Karras et al. 2022 (rho 7). One instance per sampling run, steps in order.
 * @implements {Scheduler}
 */
export class DPMSolverPP2MScheduler {
  /**
   * @param {SchedulerConfig} config
   * @param {number} numInferenceSteps
   * @param {{ eta?: number, karras?: boolean }} [options]
   */
  constructor(config, numInferenceSteps, { eta = 0.0, karras = false } = {}) {
    if (eta !== 0.0) throw new ConfigError(`eta ${repr(eta)} is a DDIM option; DPM-Solver++ 2M is deterministic (eta 0)`);
    const T = config.num_train_timesteps;
    if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1 || numInferenceSteps > T) {
      throw new ConfigError(`num_inference_steps ${repr(numInferenceSteps)} must be an integer in [1, ${T}]`);
    }
    this.config = config;
    this.karras = karras;
    this.name = karras ? 'dpmpp-2m-karras' : 'dpmpp-2m';
    this.initNoiseSigma = 1.0;
    this.spacing = config.timestep_spacing ?? DEFAULT_SPACING[this.name];
    const n = this.numInferenceSteps = numInferenceSteps;
    const abar = alphasCumprod(config);
    const trainSigmas = abar.map((a) => Math.sqrt(f(f(1 - a) / a)));
    /** @type {number[]} */
    let steps;
    if (this.spacing === 'linspace') {
      steps = Array.from(linspace(0, T - 1, n + 1), roundHalfEven).reverse().slice(0, -1);
    } else if (this.spacing === 'leading') {
      steps = Array.from({ length: n + 1 }, (_, k) => k * Math.floor(T / (n + 1))).reverse().slice(0, -1).map((s) => s + config.steps_offset);
    } else {
      steps = Array.from(arangeFloat(T, 0, -T / n), (v) => roundHalfEven(v) - 1);
    }
    /** @type {number[]} */
    let sigmas;
    if (karras) {
      const logSigmas = trainSigmas.map((s) => Math.log(s));  // float32, as np.log of a float32 array
      const sMin = trainSigmas[0];
      const sMax = trainSigmas[T - 1];
      const ramp = linspace(0, 1, n);
      sigmas = Array.from(ramp, (r) => (sMax ** (1 / 7.0) + r * (sMin ** (1 / 7.0) - sMax ** (1 / 7.0))) ** 7.0);
      const ts = sigmas.map((s) => DPMSolverPP2MScheduler.sigmaToT(s, logSigmas));
      steps = ts.map((t) => Math.trunc(config.beta_schedule !== 'squaredcos_cap_v2' ? roundHalfEven(t) : t));
    } else {
      sigmas = steps.map((s) => interpGrid(s, trainSigmas));
    }
    this.sigmas = Float32Array.from([...sigmas, 0.0]);
    this.steps = steps;
    this.timesteps = Float32Array.from(steps);
    /** @type {Float32Array | null} */
    this.x0Prev = null;
    this.last = -1;
  }

  /**
   * Fractional training timestep of a sigma: linear in log-sigma between neighbours (`_sigma_to_t`).
   * @param {number} sigma
   * @param {Float32Array} logSigmas
   */
  static sigmaToT(sigma, logSigmas) {
    const logSigma = Math.log(Math.max(sigma, 1e-10));
    let low = 0;
    for (let j = 0; j < logSigmas.length; j++) if (logSigma - logSigmas[j] >= 0) low = j;
    low = Math.min(low, logSigmas.length - 2);
    const lo = logSigmas[low];
    const hi = logSigmas[low + 1];
    const w = Math.min(Math.max((lo - logSigma) / f(lo - hi), 0), 1);
    return (1 - w) * low + w * (low + 1);
  }

  /** @param {number} sigma @returns {[number, number]} */
  static alphaSigma(sigma) {
    const alpha = f(1 / f(Math.sqrt(f(f(sigma * sigma) + 1))));
    return [alpha, f(sigma * alpha)];
  }

  /** @param {number} alpha @param {number} sigma */
  static lambda(alpha, sigma) {
    return f(f(Math.log(alpha)) - f(Math.log(sigma)));
  }

  /** DPM-Solver feeds the latent unscaled. @param {Float32Array} x @param {number} i */
  scaleModelInput(x, i) {
    checkIndex(i, this.numInferenceSteps);
    return x;
  }

  /**
   * @param {Float32Array} out
   * @param {number} i
   * @param {Float32Array} x
   * @param {NoiseSource | null} [source] unused (deterministic)
   */
  // eslint-disable-next-line no-unused-vars
  step(out, i, x, source = null) {
    checkIndex(i, this.numInferenceSteps);
    if (i !== this.last + 1 && this.x0Prev !== null) throw new ConfigError(`DPM-Solver++ steps run in order: step ${i} after step ${this.last}`);
    const [alphaS, sigmaS] = DPMSolverPP2MScheduler.alphaSigma(this.sigmas[i]);
    const kind = this.config.prediction_type;
    let x0 = kind === 'epsilon' ? x.map((v, k) => f(v - f(sigmaS * out[k])) / alphaS)
      : kind === 'v_prediction' ? x.map((v, k) => f(alphaS * v) - f(sigmaS * out[k])) : out;
    if (this.config.clip_sample) x0 = clip1(Float32Array.from(x0));
    const [alphaT, sigmaT] = DPMSolverPP2MScheduler.alphaSigma(this.sigmas[i + 1]);
    const lamS = DPMSolverPP2MScheduler.lambda(alphaS, sigmaS);
    const h = f(DPMSolverPP2MScheduler.lambda(alphaT, sigmaT) - lamS);
    const ratio = f(sigmaT / sigmaS);
    const c0 = f(alphaT * f(f(Math.exp(-h)) - 1));
    let next;
    const prev = this.x0Prev;
    if (prev === null || i === this.numInferenceSteps - 1) {
      next = x.map((v, k) => f(ratio * v) - f(c0 * x0[k]));
    } else {
      const [alphaP, sigmaP] = DPMSolverPP2MScheduler.alphaSigma(this.sigmas[i - 1]);
      const r0 = f(f(lamS - DPMSolverPP2MScheduler.lambda(alphaP, sigmaP)) / h);
      const inv = f(1 / r0);
      const c1 = f(f(0.5) * c0);
      next = x.map((v, k) => f(f(ratio * v) - f(c0 * x0[k])) - f(c1 * f(inv * f(x0[k] - prev[k]))));
    }
    this.x0Prev = x0;
    this.last = i;
    return next;
  }

  /** @param {Float32Array} x0 @param {Float32Array} noise @param {number} i */
  addNoiseAt(x0, noise, i) {
    const [alpha, sigma] = DPMSolverPP2MScheduler.alphaSigma(this.sigmas[checkIndex(i, this.numInferenceSteps)]);
    return x0.map((v, k) => f(alpha * v) + f(sigma * noise[k]));
  }
}

/**
 * `strength` as a number in (0, 1], or a ConfigError naming it.
 * @param {any} strength
 */
export function checkStrength(strength) {
  if (typeof strength !== 'number' || !(strength > 0 && strength <= 1)) {
    throw new ConfigError(`strength ${repr(strength)} must be a number in (0, 1] (1: start from pure noise)`);
  }
  return strength;
}

/**
 * The first latent and the index of the first step (`start_latents`): strength 1 starts from
 * `noise * initNoiseSigma`; below 1 the last `int(n * strength)` steps run from `init` noised to the
 * first of them.
 * @param {Scheduler} scheduler
 * @param {Float32Array} noise
 * @param {Float32Array | null} init
 * @param {number} strength
 * @returns {[Float32Array, number]}
 */
export function startLatents(scheduler, noise, init, strength) {
  strength = checkStrength(strength);
  const n = scheduler.timesteps.length;
  if (strength === 1.0) {
    const s = f(scheduler.initNoiseSigma);
    return [noise.map((v) => v * s), 0];
  }
  const run = Math.min(Math.trunc(n * strength), n);
  if (run < 1) {
    throw new ConfigError(`strength ${strength} with ${n} steps runs no denoising step (int(${n} x ${strength}) = 0)`,
      'raise the strength or the number of steps');
  }
  if (init === null) throw new ConfigError(`strength ${strength} needs an image to start from (strength 1 starts from noise)`);
  if (init.length !== noise.length) {
    throw new ConfigError(`the image to start from encodes to ${init.length} values, the sampler's latents are ${noise.length}`,
      'give the condition image at the output size');
  }
  const start = n - run;
  return [scheduler.addNoiseAt(init, noise, start), start];
}

/**
 * Build the `name` sampler for `numInferenceSteps` steps.
 * @param {string} name
 * @param {SchedulerConfig} config
 * @param {number} numInferenceSteps
 * @param {{ eta?: number }} [options]
 * @returns {Scheduler}
 */
export function makeScheduler(name, config, numInferenceSteps, { eta = 0.0 } = {}) {
  oneOf('scheduler', name, SCHEDULERS);
  if (name === 'ddim') return new DDIMScheduler(config, numInferenceSteps, { eta });
  if (name === 'euler') return new EulerScheduler(config, numInferenceSteps, { eta });
  if (name === 'euler-a') return new EulerAncestralScheduler(config, numInferenceSteps, { eta });
  return new DPMSolverPP2MScheduler(config, numInferenceSteps, { eta, karras: name === 'dpmpp-2m-karras' });
}

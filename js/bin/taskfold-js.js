#!/usr/bin/env node
// taskfold-js: the JavaScript runtime's command line, mirroring `taskfold run`.
//
//   taskfold-js run PKG --task edit --prompt "make the circle blue" --image in.png [--mask mask.png]
//                   [--negative-prompt TEXT] [--num-images N] [--steps N]
//                   [--scheduler ddim|euler|euler-a|dpmpp-2m|dpmpp-2m-karras] [--seed 0]
//                   [--strength S] [--guidance S] [--image-guidance S] [--resize] [--no-verify]
//                   [--threads N] [--quiet] --out out.png [--overwrite]
//
// PKG is a package folder or the http(s) URL of one. Every check that needs no model (output paths, seed,
// scales, options the task does not use) runs before any sampling; each PNG is written through a temp file
// and a rename; with --num-images N > 1 the images are OUT_0.png .. OUT_{N-1}.png beside --out's name.
// Errors are one `error: … (hint: …)` line on stderr and exit status 2, as `taskfold run`.
import { lstatSync, renameSync, statSync, writeFileSync, rmSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, OutputError, OutputExistsError, TaskfoldError, fmtG, repr } from '../src/errors.js';
import { encodePng } from '../src/images.js';
import { checkSeed } from '../src/noise.js';
import { openPackage } from '../src/package.js';
import { checkFinite } from '../src/sampler.js';
import { SCHEDULERS } from '../src/schedulers.js';

const USAGE = `usage: taskfold-js run PKG --task TASK [--prompt TEXT] [--negative-prompt TEXT] [--num-images N]
                   [--image PNG] [--mask PNG] [--steps N]
                   [--scheduler ${SCHEDULERS.join('|')}] [--seed N] [--strength S] [--guidance S]
                   [--image-guidance S] [--resize] [--no-verify] [--threads N] [--quiet] --out OUT.png [--overwrite]`;
const FLAGS = { steps: '--steps', strength: '--strength', guidance: '--guidance', imageGuidance: '--image-guidance' };

/** The files `run` writes: `out` for one image, `<stem>_<i><suffix>` beside it for n > 1. @param {string} out @param {number} n */
function outputPaths(out, n) {
  if (n === 1) return [out];
  const dot = basename(out).lastIndexOf('.');
  const stem = dot > 0 ? basename(out).slice(0, dot) : basename(out);
  const suffix = dot > 0 ? basename(out).slice(dot) : '';
  return Array.from({ length: n }, (_, i) => join(dirname(out), `${stem}_${i}${suffix}`));
}

/** @param {string | undefined} v @param {string} flag @param {boolean} integer */
function number(v, flag, integer) {
  if (v === undefined) return null;
  const n = Number(v);
  if (v.trim() === '' || Number.isNaN(n) || (integer && !Number.isInteger(n))) {
    throw new ConfigError(`argument ${flag}: invalid ${integer ? 'int' : 'float'} value: ${repr(v)}`);
  }
  return n;
}

/** Refuse an output path before any work (as `check_output_file`). @param {string} out @param {boolean} overwrite */
function checkOutput(out, overwrite) {
  if (!out.toLowerCase().endsWith('.png')) throw new ConfigError(`--out ${repr(out)} must end in .png`);
  let st = null;
  try { st = lstatSync(out); } catch { /* does not exist */ }
  if (st?.isSymbolicLink()) throw new OutputError(`--out ${repr(out)} is a symbolic link; taskfold writes only plain files`, 'give a --out path that is not a link');
  if (st?.isDirectory()) throw new OutputError(`--out ${repr(out)} is a folder; give a file path`, `e.g. --out ${join(out, 'out.png')}`);
  if (st && !overwrite) throw new OutputExistsError(`--out ${repr(out)} already exists`, 'choose another --out or pass --overwrite');
  let parent = null;
  try { parent = statSync(dirname(out) || '.'); } catch { /* missing */ }
  if (!parent?.isDirectory()) {
    throw new OutputError(`--out ${repr(out)}: its folder ${repr(dirname(out))} ${parent ? 'is not a folder' : 'does not exist'}`,
      'create the folder first, or choose another --out');
  }
}

async function run(/** @type {string[]} */ argv) {
  // `--seed -1`: a value that looks like a negative number belongs to its option (argparse reads it so)
  const args = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith('--') && !argv[i].includes('=') && /^-[0-9.]/.test(argv[i + 1] ?? '')) args.push(`${argv[i]}=${argv[++i]}`);
    else args.push(argv[i]);
  }
  argv = args;
  const { values, positionals } = parseArgs({
    args: argv, allowPositionals: true, strict: true,
    options: {
      task: { type: 'string' }, prompt: { type: 'string', default: '' }, image: { type: 'string' }, mask: { type: 'string' },
      'negative-prompt': { type: 'string' }, 'num-images': { type: 'string', default: '1' }, quiet: { type: 'boolean', default: false },
      steps: { type: 'string' }, scheduler: { type: 'string', default: 'ddim' }, seed: { type: 'string', default: '0' },
      strength: { type: 'string' }, guidance: { type: 'string' }, 'image-guidance': { type: 'string' },
      resize: { type: 'boolean', default: false }, 'no-verify': { type: 'boolean', default: false },
      threads: { type: 'string' }, out: { type: 'string' }, overwrite: { type: 'boolean', default: false },
    },
  });
  if (positionals.length !== 1) throw new ConfigError('give one package (a folder or a URL)', USAGE);
  if (!values.task) throw new ConfigError('the following arguments are required: --task', USAGE);
  if (!values.out) throw new ConfigError('the following arguments are required: --out', USAGE);
  if (!SCHEDULERS.includes(values.scheduler)) throw new ConfigError(`argument --scheduler: invalid choice: ${repr(values.scheduler)} (choose from ${SCHEDULERS.map(repr).join(', ')})`);
  const steps = number(values.steps, '--steps', true);
  const seed = /** @type {number} */ (number(values.seed, '--seed', true));
  const strength = number(values.strength, '--strength', false);
  const guidance = number(values.guidance, '--guidance', false);
  const imageGuidance = number(values['image-guidance'], '--image-guidance', false);
  const threads = number(values.threads, '--threads', true);
  const out = values.out;
  const n = /** @type {number} */ (number(values['num-images'], '--num-images', true));
  if (n < 1) throw new ConfigError(`images per prompt must be a positive integer, got ${n}`);
  const outs = outputPaths(out, n);
  for (const o of outs) checkOutput(o, values.overwrite);
  checkSeed(seed);
  checkFinite(guidance, '--guidance');
  checkFinite(imageGuidance, '--image-guidance');
  checkFinite(strength, '--strength');
  if (threads !== null && threads < 1) throw new ConfigError(`--threads ${threads} must be a positive integer`);
  const pkg = await openPackage(positionals[0], { verify: !values['no-verify'], threads: threads ?? undefined });
  try {
    const given = { steps, strength, guidance, imageGuidance };
    const used = pkg.sampling(values.task, given);
    const unused = Object.entries(given).filter(([k, v]) => v !== null && used[/** @type {keyof typeof used} */ (k)] === null)
      .map(([k]) => FLAGS[/** @type {keyof typeof FLAGS} */ (k)]);
    if (unused.length) {
      const spec = pkg.spec(values.task);
      throw new ConfigError(`task ${repr(values.task)} does not use ${unused.join(', ')} (its input is ${repr(spec.inputs)}, guidance ${repr(spec.guidance)})`,
        `drop ${unused.join(', ')}`);
    }
    const start = performance.now();
    const images = await pkg.generate(values.task, {
      prompt: values.prompt, image: values.image ?? null, mask: values.mask ?? null, steps: used.steps, scheduler: values.scheduler,
      guidance: used.guidance, imageGuidance: used.imageGuidance, strength: used.strength, seed, resize: values.resize,
      negativePrompt: values['negative-prompt'] ?? null, numImages: n,
    });
    for (const [k, image] of images.entries()) {
      const o = outs[k];
      const tmp = join(dirname(o), `.${basename(o)}.${process.pid}.tmp`);
      try {
        writeFileSync(tmp, await encodePng(image), { flag: 'wx' });
        if (!values.overwrite) {
          try { lstatSync(o); throw new OutputExistsError(`--out ${repr(o)} already exists`, 'choose another --out or pass --overwrite'); } catch (e) { if (e instanceof OutputExistsError) throw e; }
        }
        renameSync(tmp, o);
      } finally {
        rmSync(tmp, { force: true });
      }
    }
    for (const w of await pkg.promptWarnings(values.task, values.prompt)) console.error(`warning: ${w}`);
    const names = { steps: 'steps', strength: 'strength', guidance: 'guidance', imageGuidance: 'image guidance' };
    const parts = Object.entries(used).filter(([, v]) => v !== null)
      .map(([k, v]) => `${names[/** @type {keyof typeof names} */ (k)]} ${fmtG(/** @type {number} */ (v))}${given[/** @type {keyof typeof given} */ (k)] !== null ? '' : '*'}`);
    const starred = parts.some((p) => p.endsWith('*'));
    const [h, w] = pkg.imageSize;
    const what = n === 1 ? outs[0] : `${outs[0]} .. ${basename(outs[n - 1])}`;
    if (!values.quiet) {
      console.log(`wrote ${what} (${w}x${h}, task ${values.task}, ${parts.join(', ')}${starred ? ' (* = package default)' : ''}, ${values.scheduler}, `
        + `onnx/${pkg.executionProviders.join('+')}, ${((performance.now() - start) / 1000).toFixed(2)} s)`);
    }
  } finally {
    await pkg.close();
  }
  return 0;
}

async function main() {
  const [command, ...rest] = process.argv.slice(2);
  if (command !== 'run') {
    console.error(command === '--help' || command === '-h' || command === undefined ? USAGE : `error: unknown command ${repr(command)} (hint: taskfold-js run …)`);
    return command === '--help' || command === '-h' ? 0 : 2;
  }
  try {
    return await run(rest);
  } catch (e) {
    const err = /** @type {any} */ (e);
    if (err instanceof TaskfoldError || err?.code?.startsWith?.('ERR_PARSE_ARGS')) {
      console.error(`error: ${err.message}${err.hint ? ` (hint: ${err.hint})` : ''}`);
      return 2;
    }
    throw e;
  }
}

process.exitCode = await main();

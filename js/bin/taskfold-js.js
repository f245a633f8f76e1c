#!/usr/bin/env node
// taskfold-js: the JavaScript runtime's command line, mirroring `taskfold run`.
//
//   taskfold-js run PKG --task edit --prompt "make the circle blue" --image in.png [--mask mask.png]
//                   [--steps N] [--scheduler ddim|euler|euler-a|dpmpp-2m|dpmpp-2m-karras] [--seed 0]
//                   [--strength S] [--guidance S] [--image-guidance S] [--resize] [--no-verify]
//                   [--threads N] --out out.png [--overwrite]
//
// PKG is a package folder or the http(s) URL of one. Every check that needs no model (output path, seed,
// scales) runs before any session is created; the PNG is written through a temp file and a rename.
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

const USAGE = `usage: taskfold-js run PKG --task TASK [--prompt TEXT] [--image PNG] [--mask PNG] [--steps N]
                   [--scheduler ${SCHEDULERS.join('|')}] [--seed N] [--strength S] [--guidance S]
                   [--image-guidance S] [--resize] [--no-verify] [--threads N] --out OUT.png [--overwrite]`;

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
  checkOutput(out, values.overwrite);
  checkSeed(seed);
  checkFinite(guidance, '--guidance');
  checkFinite(imageGuidance, '--image-guidance');
  checkFinite(strength, '--strength');
  if (threads !== null && threads < 1) throw new ConfigError(`--threads ${threads} must be a positive integer`);
  const pkg = await openPackage(positionals[0], { verify: !values['no-verify'], threads: threads ?? undefined });
  try {
    const used = pkg.sampling(values.task, { steps, strength, guidance, imageGuidance });
    const start = performance.now();
    const [image] = await pkg.generate(values.task, {
      prompt: values.prompt, image: values.image ?? null, mask: values.mask ?? null, steps: used.steps, scheduler: values.scheduler,
      guidance: used.guidance, imageGuidance: used.imageGuidance, strength: used.strength, seed, resize: values.resize,
    });
    const png = await encodePng(image);
    const tmp = join(dirname(out), `.${basename(out)}.${process.pid}.tmp`);
    try {
      writeFileSync(tmp, png, { flag: 'wx' });
      if (!values.overwrite) {
        try { lstatSync(out); throw new OutputExistsError(`--out ${repr(out)} already exists`, 'choose another --out or pass --overwrite'); } catch (e) { if (e instanceof OutputExistsError) throw e; }
      }
      renameSync(tmp, out);
    } finally {
      rmSync(tmp, { force: true });
    }
    for (const w of await pkg.promptWarnings(values.task, values.prompt)) console.error(`warning: ${w}`);
    const given = { steps, strength, guidance, imageGuidance };
    const names = { steps: 'steps', strength: 'strength', guidance: 'guidance', imageGuidance: 'image guidance' };
    const parts = Object.entries(used).filter(([, v]) => v !== null)
      .map(([k, v]) => `${names[/** @type {keyof typeof names} */ (k)]} ${fmtG(/** @type {number} */ (v))}${given[/** @type {keyof typeof given} */ (k)] !== null ? '' : '*'}`);
    const [h, w] = pkg.imageSize;
    console.log(`wrote ${out} (${w}x${h}, task ${values.task}, ${parts.join(', ')} (* = package default), ${values.scheduler}, `
      + `onnx/${pkg.executionProviders.join('+')}, ${((performance.now() - start) / 1000).toFixed(2)} s)`);
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

/**
 * taskfold's JavaScript runtime: run every task of an exported package in Node (onnxruntime-node)
 * and in browsers (onnxruntime-web), same seed, same image as the Python runtime.
 *
 * One module per Python `runtime/` module: reader, manifest, sampler, schedulers, guidance,
 * tokenizers, images, noise, package; one entry, {@link openPackage}.
 */

export { openPackage, Package } from './package.js';
export { TaskfoldError, ConfigError, PackageError, TaskError, OutputError, OutputExistsError } from './errors.js';
export { SCHEDULERS, makeScheduler, configFromDiffusers, startLatents } from './schedulers.js';
export { guidanceBatches, combine } from './guidance.js';
export { noiseSource, normal, NoiseSource, MAX_SEED, checkSeed } from './noise.js';
export { sample } from './sampler.js';
export { PackageReader } from './reader.js';
export { validateManifest, readManifest } from './manifest.js';
export { tokenizerFromFiles, RuntimeTokenizer } from './tokenizers.js';
export { decodePng, encodePng, toRgba, resizeBicubic } from './images.js';
export { taskFromRecord } from './tasks.js';

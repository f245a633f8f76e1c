/**
 * The package limits (mirrors `runtime/limits.py`): `package_schema.json`, the one statement of what a
 * package may hold — every size bound, the operators each kind of graph may use, the tokenizer kinds —
 * shared with the Python runtime and the exporter. `npm run build` copies it from
 * `runtime/package_schema.json` byte for byte (a test checks the copy).
 */

import LIMITS from '../package_schema.json' with { type: 'json' };

/** The whole limits document. */
export function limits() {
  return /** @type {Record<string, any>} */ (LIMITS);
}

/**
 * One size bound by name (`"image_side"`), or nested (`"bytes.graph"`, `"graph.nodes"`).
 * @param {string} name
 * @returns {number}
 */
export function bound(name) {
  /** @type {any} */
  let node = limits().bounds;
  for (const part of name.split('.')) node = node[part];
  return node;
}

/**
 * `domain -> operator types` a graph of `kind` (`unet`, `text_encoder`, `codec`) may use.
 * @param {string} kind
 * @returns {Record<string, Set<string>>}
 */
export function operators(kind) {
  return Object.fromEntries(Object.entries(limits().operators[kind]).map(([d, ops]) => [d, new Set(/** @type {string[]} */ (ops))]));
}

/**
 * @typedef {{ models: string[], normalizers: (string|null)[], pre_tokenizers: (string|null)[], decoders: (string|null)[],
 *   post_processors: (string|null)[], split_patterns: string[], replace_patterns: string[] }} TokenizerKinds
 */

/** The tokenizer components and patterns a package's `tokenizer.json` may use. @returns {TokenizerKinds} */
export function tokenizerKinds() {
  return limits().tokenizer;
}

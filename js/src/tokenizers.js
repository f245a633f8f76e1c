/**
 * The runtime's tokenizers (mirrors `runtime/tokenizers.py`): a package's `tokenizer.json` turned into
 * the text encoder's `input_ids` exactly as the Rust `tokenizers` library (which the Python runtime
 * uses) turns it.
 *
 * Only the kinds taskfold writes are read — `package_schema.json` lists them and
 * {@link admitTokenizer} refuses anything else, as the Python runtime does: the tiny encoder's
 * WordLevel tokenizer (Lowercase; WhitespaceSplit + Punctuation; `[BOS] … [EOS]`) and a pipeline's
 * CLIP BPE tokenizer (NFC, white space collapsed, Lowercase; CLIP's split + ByteLevel; `</w>` word
 * ends; RobertaProcessing). They are implemented here component by component with the library's
 * semantics where JavaScript's built-ins differ: Lowercase maps each character on its own (no
 * final-sigma rule), `\s` is Oniguruma's white space (U+0085 yes, U+FEFF no), added tokens are
 * matched on the raw text, leftmost-longest, before normalisation.
 *
 * `tokenizer.encode(prompts)` returns int64 `[B, max_length]` ids: each prompt truncated (begin and
 * end tokens kept) and padded to `max_length` with the package's pad id.
 */

import { ConfigError, PackageError, repr } from './errors.js';
import { parseJson } from './json.js';
import { bound, tokenizerKinds } from './limits.js';

/** The files a runtime tokenizer may read, by name. */
export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];
const HINT = "the package's tokenizer.json is damaged or crafted; re-export the package";

// --- white space, punctuation and the patterns taskfold writes -------------------------------------

/** Oniguruma's `\s` in Unicode mode = Rust's `char::is_whitespace` (the White_Space property). */
const WS = '\\t\\n\\v\\f\\r\\x85\\p{Zs}\\u2028\\u2029';
const WS_RE = new RegExp(`^[${WS}]$`, 'u');
const PUNCT_RE = /^(?:[!-/:-@[-`{-~]|\p{P})$/u;
/** Oniguruma's `\w` in Unicode mode. */
const WORD = '\\p{L}\\p{M}\\p{Nd}\\p{Pc}';

/**
 * An Oniguruma pattern of the listed kind as a JavaScript regular expression (`u` flag), `\s`, `\S`
 * and `\w` spelt out as Oniguruma reads them.
 * @param {string} pattern
 */
export function onigToJs(pattern) {
  let out = '';
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\' && i + 1 < pattern.length) {
      const e = pattern[i + 1];
      i++;
      if (e === 's') out += inClass ? WS : `[${WS}]`;
      else if (e === 'S') out += inClass ? (() => { throw new Error('\\S in a class'); })() : `[^${WS}]`;
      else if (e === 'w') out += inClass ? WORD : `[${WORD}]`;
      else if (e === 'p' || e === 'P') {
        const end = pattern.indexOf('}', i);
        out += `\\${e}${pattern.slice(i + 1, end + 1)}`;
        i = end;
      } else out += `\\${e}`;
      continue;
    }
    if (c === '[' && !inClass) inClass = true;
    else if (c === ']' && inClass) inClass = false;
    out += c;
  }
  return new RegExp(out, 'gu');
}

/** GPT-2's pre-tokenization regex, as the ByteLevel pre-tokenizer uses it. */
const GPT2_RE = onigToJs("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+");
const WHITESPACE_RE = onigToJs('\\w+|[^\\w\\s]+');

/** GPT-2's byte -> printable character table, in byte order. */
const BYTE_CHARS = (() => {
  const keep = new Set();
  for (let b = 0x21; b <= 0x7e; b++) keep.add(b);
  for (let b = 0xa1; b <= 0xac; b++) keep.add(b);
  for (let b = 0xae; b <= 0xff; b++) keep.add(b);
  const out = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) out.push(String.fromCodePoint(keep.has(b) ? b : 256 + extra++));
  return out;
})();

// --- a string with its alignment to the original text ------------------------------------------

/** A normalised string: its characters (code points), each with the original span it came from. */
class Aligned {
  /**
   * @param {string[]} chars
   * @param {[number, number][]} spans
   */
  constructor(chars, spans) {
    this.chars = chars;
    this.spans = spans;
  }

  /** @param {string} text @param {number} offset */
  static of(text, offset = 0) {
    const chars = [...text];
    /** @type {[number, number][]} */
    const spans = [];
    let pos = offset;
    for (const ch of chars) {
      spans.push([pos, pos + ch.length]);
      pos += ch.length;
    }
    return new Aligned(chars, spans);
  }

  get text() {
    return this.chars.join('');
  }

  /** @param {number} a @param {number} b */
  slice(a, b) {
    return new Aligned(this.chars.slice(a, b), this.spans.slice(a, b));
  }

  /** The original span of the whole string. @returns {[number, number]} */
  span() {
    return this.chars.length ? [this.spans[0][0], this.spans[this.spans.length - 1][1]] : [0, 0];
  }

  /** @param {(ch: string) => string} fn each character to its replacement (aligned to its span) */
  mapChars(fn) {
    /** @type {string[]} */
    const chars = [];
    /** @type {[number, number][]} */
    const spans = [];
    this.chars.forEach((ch, i) => {
      for (const c of fn(ch)) {
        chars.push(c);
        spans.push(this.spans[i]);
      }
    });
    return new Aligned(chars, spans);
  }

  /**
   * Unicode normalisation, run by run (a starter and the marks after it), each run's output aligned
   * to the run's span.
   * @param {'NFC' | 'NFD' | 'NFKC' | 'NFKD'} form
   */
  normalize(form) {
    /** @type {string[]} */
    const chars = [];
    /** @type {[number, number][]} */
    const spans = [];
    let i = 0;
    while (i < this.chars.length) {
      let j = i + 1;
      while (j < this.chars.length && /^\p{M}$/u.test(this.chars[j])) j++;
      const run = this.chars.slice(i, j).join('').normalize(form);
      /** @type {[number, number]} */
      const span = [this.spans[i][0], this.spans[j - 1][1]];
      for (const c of run) {
        chars.push(c);
        spans.push(span);
      }
      i = j;
    }
    // composition across runs (e.g. Hangul syllables) is rare; normalise the whole for the text itself
    const whole = chars.join('').normalize(form);
    return whole === chars.join('') ? new Aligned(chars, spans) : Aligned.ofSpan(whole, this.span());
  }

  /** @param {string} text @param {[number, number]} span all characters aligned to one span */
  static ofSpan(text, span) {
    const chars = [...text];
    return new Aligned(chars, chars.map(() => span));
  }

  /**
   * `[start, end)` character ranges of the matches of `re` (global) in the text.
   * @param {RegExp} re
   * @returns {[number, number][]}
   */
  matches(re) {
    const text = this.text;
    /** @type {number[]} UTF-16 offset -> character index */
    const index = [];
    this.chars.forEach((ch, i) => {
      for (let k = 0; k < ch.length; k++) index.push(i);
    });
    index.push(this.chars.length);
    /** @type {[number, number][]} */
    const out = [];
    re.lastIndex = 0;
    for (const m of text.matchAll(re)) {
      if (m[0].length === 0) continue;
      const start = /** @type {number} */ (m.index);
      out.push([index[start], index[start + m[0].length]]);
    }
    return out;
  }

  /** @param {RegExp} re @param {string} content */
  replace(re, content) {
    const ms = this.matches(re);
    /** @type {string[]} */
    const chars = [];
    /** @type {[number, number][]} */
    const spans = [];
    let pos = 0;
    for (const [a, b] of ms) {
      chars.push(...this.chars.slice(pos, a));
      spans.push(...this.spans.slice(pos, a));
      /** @type {[number, number]} */
      const span = [this.spans[a][0], this.spans[b - 1][1]];
      for (const c of content) {
        chars.push(c);
        spans.push(span);
      }
      pos = b;
    }
    chars.push(...this.chars.slice(pos));
    spans.push(...this.spans.slice(pos));
    return new Aligned(chars, spans);
  }
}

/**
 * Split `s` at the match ranges `ms` with the library's delimiter behaviour.
 * @param {Aligned} s
 * @param {[number, number][]} ms
 * @param {string} behavior
 * @param {boolean} invert
 * @returns {Aligned[]}
 */
function splitBy(s, ms, behavior, invert = false) {
  /** @type {[number, number, boolean][]} */
  let parts = [];
  let pos = 0;
  for (const [a, b] of ms) {
    if (a > pos) parts.push([pos, a, false]);
    parts.push([a, b, true]);
    pos = b;
  }
  if (pos < s.chars.length) parts.push([pos, s.chars.length, false]);
  if (invert) parts = parts.map(([a, b, m]) => [a, b, !m]);
  /** @type {[number, number][]} */
  let keep = [];
  if (behavior === 'Removed') keep = parts.filter((p) => !p[2]).map(([a, b]) => [a, b]);
  else if (behavior === 'Isolated') keep = parts.map(([a, b]) => [a, b]);
  else if (behavior === 'Contiguous') {
    for (const [a, b, m] of parts) {
      const last = keep[keep.length - 1];
      if (m && last && /** @type {any} */ (last).match) last[1] = b;
      else {
        const item = /** @type {any} */ ([a, b]);
        item.match = m;
        keep.push(item);
      }
    }
  } else if (behavior === 'MergedWithPrevious') {
    let prevMatch = false;
    for (const [a, b, m] of parts) {
      const last = keep[keep.length - 1];
      if (m && last && !prevMatch) last[1] = b;
      else keep.push([a, b]);
      prevMatch = m;
    }
  } else if (behavior === 'MergedWithNext') {
    let pending = -1;
    for (const [a, b, m] of parts) {
      if (m) {
        if (pending < 0) pending = a;
        else { keep.push([pending, a]); pending = a; }
      } else {
        keep.push([pending >= 0 ? pending : a, b]);
        pending = -1;
      }
    }
    if (pending >= 0) keep.push([pending, s.chars.length]);
  } else throw new PackageError(`split behaviour ${repr(behavior)} is not supported`, HINT);
  return keep.filter(([a, b]) => b > a).map(([a, b]) => s.slice(a, b));
}

/**
 * Matches that are single characters for which `test` holds.
 * @param {Aligned} s
 * @param {RegExp} test
 * @returns {[number, number][]}
 */
function charMatches(s, test) {
  /** @type {[number, number][]} */
  const out = [];
  s.chars.forEach((ch, i) => {
    if (test.test(ch)) out.push([i, i + 1]);
  });
  return out;
}

// --- components ---------------------------------------------------------------------------------

/**
 * @param {any} node
 * @returns {(s: Aligned) => Aligned}
 */
function normalizer(node) {
  if (node === null || node === undefined) return (s) => s;
  switch (node.type) {
    case 'Sequence': {
      /** @type {((s: Aligned) => Aligned)[]} */
      const steps = node.normalizers.map(normalizer);
      return (s) => steps.reduce((acc, fn) => fn(acc), s);
    }
    case 'Lowercase':
      return (s) => s.mapChars((ch) => ch.toLowerCase());
    case 'NFC': case 'NFD': case 'NFKC': case 'NFKD':
      return (s) => s.normalize(node.type);
    case 'Strip': {
      const left = node.strip_left ?? true;
      const right = node.strip_right ?? true;
      return (s) => {
        let a = 0;
        let b = s.chars.length;
        if (left) while (a < b && WS_RE.test(s.chars[a])) a++;
        if (right) while (b > a && WS_RE.test(s.chars[b - 1])) b--;
        return s.slice(a, b);
      };
    }
    case 'Replace': {
      const re = patternRe(node.pattern);
      return (s) => s.replace(re, String(node.content));
    }
    default:
      throw new PackageError(`normalizer type ${repr(node.type)} is not supported`, HINT);
  }
}

/** @param {any} pattern */
function patternRe(pattern) {
  if (typeof pattern?.Regex === 'string') return onigToJs(pattern.Regex);
  return new RegExp(String(pattern.String).replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&'), 'gu');
}

/**
 * @param {any} node
 * @returns {(pieces: Aligned[]) => Aligned[]}
 */
function preTokenizer(node) {
  if (node === null || node === undefined) return (p) => p;
  switch (node.type) {
    case 'Sequence': {
      /** @type {((p: Aligned[]) => Aligned[])[]} */
      const steps = node.pretokenizers.map(preTokenizer);
      return (p) => steps.reduce((acc, fn) => fn(acc), p);
    }
    case 'WhitespaceSplit':
      return (p) => p.flatMap((s) => splitBy(s, charMatches(s, WS_RE), 'Removed'));
    case 'Whitespace':
      return (p) => p.flatMap((s) => splitBy(s, s.matches(WHITESPACE_RE), 'Removed', true));
    case 'Punctuation':
      return (p) => p.flatMap((s) => splitBy(s, charMatches(s, PUNCT_RE), node.behavior ?? 'Isolated'));
    case 'Split': {
      const re = patternRe(node.pattern);
      return (p) => p.flatMap((s) => splitBy(s, s.matches(re), node.behavior, Boolean(node.invert)));
    }
    case 'ByteLevel': {
      const prefix = node.add_prefix_space ?? true;
      const useRegex = node.use_regex ?? true;
      const enc = new TextEncoder();
      return (p) => p.flatMap((s) => {
        if (prefix && s.chars[0] !== ' ') s = new Aligned([' ', ...s.chars], [[s.span()[0], s.span()[0]], ...s.spans]);
        const parts = useRegex ? splitBy(s, s.matches(GPT2_RE), 'Isolated') : [s];
        return parts.map((q) => q.mapChars((ch) => Array.from(enc.encode(ch), (b) => BYTE_CHARS[b]).join('')));
      });
    }
    default:
      throw new PackageError(`pre_tokenizer type ${repr(node.type)} is not supported`, HINT);
  }
}

/**
 * The post-processor: `ids -> ids` with the special tokens of a single sequence, and how many it adds.
 * @param {any} node
 * @returns {{ apply: (ids: number[]) => number[], added: number }}
 */
function postProcessor(node) {
  if (node === null || node === undefined || node.type === 'ByteLevel') return { apply: (ids) => ids, added: 0 };
  switch (node.type) {
    case 'Sequence': {
      /** @type {{ apply: (ids: number[]) => number[], added: number }[]} */
      const steps = node.processors.map(postProcessor);
      return {
        apply: (ids) => steps.reduce((acc, s) => s.apply(acc), ids),
        added: steps.reduce((n, s) => n + s.added, 0),
      };
    }
    case 'RobertaProcessing':
    case 'BertProcessing': {
      const cls = Number(node.cls[1]);
      const sep = Number(node.sep[1]);
      return { apply: (ids) => [cls, ...ids, sep], added: 2 };
    }
    case 'TemplateProcessing': {
      /** @type {(number[] | null)[]} */
      const pieces = node.single.map((/** @type {any} */ item) => {
        if (item.Sequence) return null;
        const special = node.special_tokens?.[item.SpecialToken.id];
        if (!special) throw new PackageError(`template special token ${repr(item.SpecialToken.id)} is not defined`, HINT);
        return special.ids.map(Number);
      });
      return {
        apply: (ids) => pieces.flatMap((p) => (p === null ? ids : p)),
        added: pieces.reduce((n, p) => n + (p === null ? 0 : p.length), 0),
      };
    }
    default:
      throw new PackageError(`post_processor type ${repr(node.type)} is not supported`, HINT);
  }
}

/**
 * The model: a pre-token to `[id, span]` pairs.
 * @param {any} model
 * @returns {{ tokenize: (s: Aligned) => [number, [number, number]][], vocab: Map<string, number>, unkId: number | null }}
 */
function tokenModel(model) {
  /** @type {Map<string, number>} */
  const vocab = new Map(Object.entries(model.vocab).map(([k, v]) => [k, Number(v)]));
  const unk = typeof model.unk_token === 'string' ? model.unk_token : null;
  const unkId = unk !== null && vocab.has(unk) ? /** @type {number} */ (vocab.get(unk)) : null;
  if (model.type === 'WordLevel') {
    return {
      vocab,
      unkId,
      tokenize(s) {
        const id = vocab.get(s.text) ?? unkId;
        if (id === null || id === undefined) throw new PackageError(`WordLevel: ${repr(s.text)} is not in the vocabulary and there is no unknown token`, HINT);
        return [[id, s.span()]];
      },
    };
  }
  // BPE
  const prefix = model.continuing_subword_prefix ?? '';
  const suffix = model.end_of_word_suffix ?? '';
  /** @type {Map<string, number>} "a b" -> rank */
  const ranks = new Map();
  model.merges.forEach((/** @type {string | string[]} */ m, /** @type {number} */ r) => {
    const [a, b] = Array.isArray(m) ? m : splitMerge(m);
    if (!ranks.has(`${a} ${b}`)) ranks.set(`${a} ${b}`, r);
  });
  const fuseUnk = Boolean(model.fuse_unk);
  const byteFallback = Boolean(model.byte_fallback);
  return {
    vocab,
    unkId,
    tokenize(s) {
      if (model.ignore_merges && vocab.has(s.text)) return [[/** @type {number} */ (vocab.get(s.text)), s.span()]];
      /** @type {{ tok: string, id: number, from: number, to: number }[]} */
      let sym = [];
      const n = s.chars.length;
      for (let i = 0; i < n; i++) {
        let tok = s.chars[i];
        if (i > 0 && prefix) tok = prefix + tok;
        if (i === n - 1 && suffix) tok += suffix;
        const id = vocab.get(tok);
        if (id !== undefined) {
          sym.push({ tok, id, from: i, to: i + 1 });
          continue;
        }
        if (byteFallback) {
          const bytes = Array.from(new TextEncoder().encode(s.chars[i]), (b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
          if (bytes.every((b) => vocab.has(b))) {
            for (const b of bytes) sym.push({ tok: b, id: /** @type {number} */ (vocab.get(b)), from: i, to: i + 1 });
            continue;
          }
        }
        if (unkId === null) throw new PackageError(`BPE: ${repr(tok)} is not in the vocabulary and there is no unknown token`, HINT);
        const last = sym[sym.length - 1];
        if (fuseUnk && last && last.id === unkId && last.tok === unk) last.to = i + 1;
        else sym.push({ tok: /** @type {string} */ (unk), id: unkId, from: i, to: i + 1 });
      }
      // merge the lowest-ranked adjacent pair, leftmost first, until none is left
      {
        for (;;) {
          let best = -1;
          let bestRank = Infinity;
          for (let k = 0; k + 1 < sym.length; k++) {
            const r = ranks.get(`${sym[k].tok} ${sym[k + 1].tok}`);
            if (r !== undefined && r < bestRank) {
              bestRank = r;
              best = k;
            }
          }
          if (best < 0) break;
          const merged = sym[best].tok + sym[best + 1].tok;
          const id = vocab.get(merged);
          if (id === undefined) throw new PackageError(`BPE merge ${repr(`${sym[best].tok} ${sym[best + 1].tok}`)} makes ${repr(merged)}, which is not in the vocabulary`, HINT);
          sym = [...sym.slice(0, best), { tok: merged, id, from: sym[best].from, to: sym[best + 1].to }, ...sym.slice(best + 2)];
        }
      }
      return sym.map((x) => [x.id, /** @type {[number, number]} */ ([s.spans[x.from][0], s.spans[x.to - 1][1]])]);
    },
  };
}

/** A merges.txt-style line "a b" (a and b have no spaces). @param {string} m */
function splitMerge(m) {
  const parts = m.split(' ');
  if (parts.length !== 2) throw new PackageError(`BPE merge ${repr(m)} is not two symbols`, HINT);
  return parts;
}

// --- admission ----------------------------------------------------------------------------------

/**
 * Refuse a `tokenizer.json` that is not one of the kinds taskfold writes (`package_schema.json`),
 * as `admit_tokenizer` does.
 * @param {any} d
 * @param {string} where
 */
export function admitTokenizer(d, where) {
  const kinds = tokenizerKinds();
  const fail = (/** @type {string} */ problem) => new PackageError(
    `${where}: ${problem}; taskfold writes only the tokenizer kinds of package_schema.json`, HINT);
  /**
   * @param {any} node
   * @param {(string | null)[]} allowed
   * @param {string} field
   * @param {string} path
   * @param {number} depth
   */
  const component = (node, allowed, field, path, depth = 0) => {
    if (node === null || node === undefined) {
      if (!allowed.includes(null)) throw fail(`${path} is missing`);
      return;
    }
    if (typeof node !== 'object' || Array.isArray(node) || !allowed.includes(node.type) || depth > 4) {
      throw fail(`${path} has type ${typeof node === 'object' && !Array.isArray(node) ? node.type : repr(Array.isArray(node) ? 'list' : typeof node)}`);
    }
    if (node.type === 'Sequence') {
      const children = node[field];
      if (!Array.isArray(children) || children.length > 16) throw fail(`${path}.${field} is not a short list`);
      children.forEach((c, i) => component(c, allowed.filter((k) => k !== null), field, `${path}.${field}[${i}]`, depth + 1));
    }
    const pattern = node.pattern;
    if (pattern !== undefined && pattern !== null) {
      const regex = typeof pattern === 'object' ? pattern.Regex : undefined;
      const listed = node.type === 'Split' ? kinds.split_patterns : kinds.replace_patterns;
      if (regex !== undefined && !listed.includes(regex)) throw fail(`${path} uses the regular expression ${repr(String(regex).slice(0, 80))}, which is not one taskfold writes`);
      if (regex === undefined && !(typeof pattern === 'object' && typeof pattern.String === 'string' && pattern.String.length <= 64)) {
        throw fail(`${path}.pattern is neither a listed regular expression nor a short string`);
      }
    }
  };
  const model = d.model;
  if (model === null || typeof model !== 'object' || !kinds.models.includes(model.type)) {
    throw fail(`model type ${repr(model !== null && typeof model === 'object' ? model.type : null)}`);
  }
  const vocab = model.vocab;
  const n = vocab !== null && typeof vocab === 'object' && !Array.isArray(vocab) ? Object.keys(vocab).length : -1;
  if (!(n > 0 && n <= bound('vocab_size'))) throw fail(`its vocabulary is not an object of 1 to ${bound('vocab_size')} entries`);
  if (model.type === 'BPE') {
    if (!Array.isArray(model.merges) || model.merges.length > bound('merges')) throw fail(`its merges are not a list of at most ${bound('merges')}`);
    if (![null, undefined, 0].includes(model.dropout)) throw fail('BPE dropout is set (sampling tokenization is random)');
  }
  const added = d.added_tokens ?? [];
  if (!Array.isArray(added) || added.length > 1024) throw fail('added_tokens is not a list of at most 1024');
  component(d.normalizer, kinds.normalizers, 'normalizers', 'normalizer');
  component(d.pre_tokenizer, kinds.pre_tokenizers, 'pretokenizers', 'pre_tokenizer');
  component(d.post_processor, kinds.post_processors, 'processors', 'post_processor');
  component(d.decoder, kinds.decoders, 'decoders', 'decoder');
  const top = bound('tokenizer_max_length');
  const trunc = d.truncation;
  if (trunc !== null && trunc !== undefined && (typeof trunc !== 'object' || (trunc.stride ?? 0) !== 0
      || !Number.isInteger(trunc.max_length) || !(trunc.max_length >= 2 && trunc.max_length <= top))) {
    throw fail(`truncation is not a max_length from 2 to ${top} without stride`);
  }
  const pad = d.padding;
  if (pad !== null && pad !== undefined) {
    const strategy = typeof pad === 'object' ? pad.strategy : null;
    const fixed = strategy !== null && typeof strategy === 'object' ? strategy.Fixed : null;
    if (!(strategy === 'BatchLongest' || (Number.isInteger(fixed) && fixed >= 2 && fixed <= top)) || ![null, undefined, 0, 1].includes(pad.pad_to_multiple_of)) {
      throw fail(`padding is not fixed to a length from 2 to ${top}`);
    }
  }
}

// --- the tokenizer ----------------------------------------------------------------------------------

/** Prompts to `input_ids`: truncated and padded to `maxLength` as the Python runtime does. */
export class RuntimeTokenizer {
  /**
   * @param {any} doc the parsed tokenizer.json (admitted)
   * @param {number} maxLength
   * @param {number} padId
   * @param {string} kind
   */
  constructor(doc, maxLength, padId, kind) {
    this.maxLength = maxLength;
    this.padId = padId;
    this.kind = kind;
    this.normalize = normalizer(doc.normalizer);
    this.preTokenize = preTokenizer(doc.pre_tokenizer);
    this.post = postProcessor(doc.post_processor);
    this.model = tokenModel(doc.model);
    this.unkId = this.model.unkId;
    /** @type {{ content: string, id: number, normalized: boolean }[]} */
    this.added = (doc.added_tokens ?? []).map((/** @type {any} */ t) => {
      if (t.single_word || t.lstrip || t.rstrip) throw new PackageError(`added token ${repr(t.content)}: single_word, lstrip and rstrip are not supported`, HINT);
      return { content: String(t.content), id: Number(t.id), normalized: Boolean(t.normalized) && !t.special };
    }).filter((/** @type {any} */ t) => t.content.length > 0);
    if (this.post.added > maxLength) throw new PackageError(`the tokenizer adds ${this.post.added} special tokens, more than max_length ${maxLength}`, HINT);
  }

  /**
   * Split `s` at the added tokens of `tokens` (leftmost-longest); tokens come out as numbers.
   * @param {Aligned} s
   * @param {{ content: string, id: number }[]} tokens
   * @returns {(Aligned | [number, [number, number]])[]}
   */
  static splitAdded(s, tokens) {
    if (!tokens.length) return [s];
    const text = s.text;
    /** @type {(Aligned | [number, [number, number]])[]} */
    const out = [];
    const index = [];
    for (let i = 0; i < s.chars.length; i++) for (let k = 0; k < s.chars[i].length; k++) index.push(i);
    index.push(s.chars.length);
    let pos = 0;
    let from = 0;
    while (pos < text.length) {
      let best = null;
      for (const t of tokens) if (text.startsWith(t.content, pos) && (!best || t.content.length > best.content.length)) best = t;
      if (!best) {
        pos += 1;
        continue;
      }
      const a = index[pos];
      const b = index[pos + best.content.length];
      if (a > from) out.push(s.slice(from, a));
      out.push([best.id, [s.spans[a][0], s.spans[b - 1][1]]]);
      pos += best.content.length;
      from = b;
    }
    if (from < s.chars.length) out.push(s.slice(from, s.chars.length));
    return out;
  }

  /**
   * `[id, original span]` of every token of `prompt`, before truncation and special tokens.
   * @param {string} prompt
   * @returns {[number, [number, number]][]}
   */
  tokens(prompt) {
    /** @type {[number, [number, number]][]} */
    const out = [];
    const raw = this.added.filter((t) => !t.normalized);
    const norm = this.added.filter((t) => t.normalized);
    for (const seg of RuntimeTokenizer.splitAdded(Aligned.of(prompt), raw)) {
      if (Array.isArray(seg)) {
        out.push(seg);
        continue;
      }
      for (const part of RuntimeTokenizer.splitAdded(this.normalize(seg), norm)) {
        if (Array.isArray(part)) {
          out.push(part);
          continue;
        }
        for (const piece of this.preTokenize([part])) if (piece.chars.length) out.push(...this.model.tokenize(piece));
      }
    }
    return out;
  }

  /**
   * `input_ids` `[B, maxLength]` (int64) for `prompts`.
   * @param {string[]} prompts
   * @returns {BigInt64Array}
   */
  encode(prompts) {
    if (!Array.isArray(prompts) || !prompts.every((p) => typeof p === 'string')) {
      throw new ConfigError(`prompts must be a list of strings, got ${typeof prompts}`);
    }
    checkLengths(prompts);
    const out = new BigInt64Array(prompts.length * this.maxLength);
    prompts.forEach((p, b) => {
      const ids = this.ids(p);
      for (let k = 0; k < this.maxLength; k++) out[b * this.maxLength + k] = BigInt(ids[k]);
    });
    return out;
  }

  /**
   * One prompt's ids: truncated to leave room for the special tokens, post-processed, padded.
   * @param {string} prompt
   * @returns {number[]}
   */
  ids(prompt) {
    const ids = this.tokens(prompt).map(([id]) => id).slice(0, this.maxLength - this.post.added);
    const full = this.post.apply(ids);
    while (full.length < this.maxLength) full.push(this.padId);
    return full;
  }

  /**
   * `prompt` before truncation: how many tokens it is (special tokens included), and the pieces the
   * vocabulary lacks (each encoded as the unknown token), in order, once each.
   * @param {string} prompt
   * @returns {[number, string[]]}
   */
  untruncated(prompt) {
    checkLengths([prompt]);
    const toks = this.tokens(prompt);
    /** @type {string[]} */
    const unknown = [];
    if (this.unkId !== null) {
      for (const [id, [a, b]] of toks) {
        const word = prompt.slice(a, b);
        if (id === this.unkId && word && !unknown.includes(word)) unknown.push(word);
      }
    }
    return [toks.length + this.post.added, unknown];
  }
}

/** @param {string[]} prompts */
function checkLengths(prompts) {
  const top = bound('prompt_chars');
  for (const p of prompts) {
    if (p.length > top) {
      throw new ConfigError(`a prompt of ${p.length.toLocaleString('en-US')} characters; at most ${top.toLocaleString('en-US')} are read`,
        'shorten the prompt (the text encoder reads only its first tokens anyway)');
    }
  }
}

/**
 * @param {Uint8Array} data
 * @param {string} where
 */
function jsonObject(data, where) {
  let obj;
  try {
    obj = parseJson(data, where);
  } catch (e) {
    throw new PackageError(`cannot read tokenizer file ${repr(where)}: ${/** @type {Error} */ (e).message.slice(0, 200)}`);
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw new PackageError(`tokenizer file ${repr(where)} is not a JSON object`);
  return obj;
}

/**
 * The runtime tokenizer from its files' contents by name (`tokenizer_from_files`).
 * @param {Record<string, Uint8Array>} files
 * @param {number | null} [maxLength]
 * @param {number | null} [padId]
 * @param {string} [where]
 */
export function tokenizerFromFiles(files, maxLength = null, padId = null, where = 'tokenizer') {
  if (!files['tokenizer.json']) {
    throw new PackageError(`${repr(where)} holds no tokenizer.json (the files are ${repr(Object.keys(files).sort())})`,
      're-export the package with this taskfold; it writes tokenizer.json');
  }
  const d = jsonObject(files['tokenizer.json'], `${where}/tokenizer.json`);
  admitTokenizer(d, `${where}/tokenizer.json`);
  const cfg = files['tokenizer_config.json'] ? jsonObject(files['tokenizer_config.json'], `${where}/tokenizer_config.json`) : {};
  const padding = d.padding ?? {};
  if (maxLength === null) {
    const strategy = padding.strategy;
    const fixed = strategy !== null && typeof strategy === 'object' ? strategy.Fixed : null;
    maxLength = fixed || (d.truncation ?? {}).max_length || cfg.model_max_length;
  }
  const top = bound('tokenizer_max_length');
  if (!Number.isInteger(maxLength) || !(/** @type {number} */ (maxLength) >= 2 && /** @type {number} */ (maxLength) <= top)) {
    throw new PackageError(`${where}: no usable max_length (${repr(maxLength)}; expected 2 to ${top}) for the tokenizer`);
  }
  if (padId === null) {
    let padToken = cfg.pad_token;
    padToken = padToken !== null && typeof padToken === 'object' ? padToken.content : padToken;
    if (d.padding) padId = padding.pad_id;
    else if (padToken) padId = tokenToId(d, padToken);
  }
  if (!Number.isInteger(padId) || /** @type {number} */ (padId) < 0) throw new PackageError(`${where}: no pad token id for the tokenizer (got ${repr(padId)})`);
  const kind = /** @type {Record<string, string>} */ ({ WordLevel: 'wordlevel', BPE: 'clip-bpe' })[d.model.type] ?? 'other';
  return new RuntimeTokenizer(d, /** @type {number} */ (maxLength), /** @type {number} */ (padId), kind);
}

/** @param {any} d @param {string} token */
function tokenToId(d, token) {
  for (const t of d.added_tokens ?? []) if (t.content === token) return Number(t.id);
  const id = d.model.vocab[token];
  return id === undefined ? null : Number(id);
}

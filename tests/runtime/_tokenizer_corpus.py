"""A fixed corpus of 1,200 varied prompts for the tokenizer tests (deterministic; no file needed)."""

from __future__ import annotations

import numpy as np

WORDS = ["a", "red", "blue", "green", "circle", "square", "triangle", "large", "small", "make", "the", "move", "left",
         "remove", "purple", "cyan", "yellow", "zebra", "photo", "of", "cat", "dog", "Mountain", "SUNSET", "café",
         "naïve", "Ünïcödé", "ΟΔΟΣ", "İstanbul", "東京", "北京の", "カメラ", "서울", "مرحبا", "שלום", "привет",
         "don't", "it's", "we're", "I'll", "you'd", "42", "3.14", "1/2", "#tag", "@me", "$5", "e\u0301",
         "\u00b2", "\u2167", "\u24b6", "🙂", "🐈\u200d⬛", "👍🏽", "\u200b", "a\u00a0b", "x\u3000y", "-", "...", "!!!",
         "(x)", "[y]", "{z}", "\"dq\"", "'sq'", "hello_world", "<|endoftext|>", "<|startoftext|>", "[PAD]",
         "[UNK]", "[EOS]", "\t", "\n", "ß", "ﬁ", "Å", "ǅ", "ΣΑΣ", "ς", "ǰ", "ﬀ", "İ"]
SEPARATORS = [" ", " ", " ", "  ", ", ", "\t", "\n", "", "-", " \u2028 "]


def corpus(n: int = 1200, seed: int = 0) -> list[str]:
    """Short and long prompts over :data:`WORDS` (unicode, punctuation, specials, white space of every kind),
    plus the empty prompt and white space alone."""
    rng = np.random.default_rng(seed)
    out = ["", " ", "\t\n", "   a   ", "a" * 200, " ".join(["word"] * 120)]
    while len(out) < n:
        k = int(rng.choice([1, 2, 3, 5, 8, 13, 40, 90]))
        parts = []
        for _ in range(k):
            w = WORDS[int(rng.integers(len(WORDS)))]
            if rng.random() < 0.15:
                w = w.upper()
            elif rng.random() < 0.1:
                w = w.capitalize()
            parts.append(w)
            parts.append(SEPARATORS[int(rng.integers(len(SEPARATORS)))])
        out.append("".join(parts).strip(" ") if rng.random() < 0.8 else "".join(parts))
    return out

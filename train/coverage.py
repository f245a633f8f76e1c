"""Token coverage: do a dataset's prompts use words the base's text encoder never trained on?

The text encoder stays frozen in fine-tuning (the paper's recipe), so a word its pretraining never
showed keeps its random embedding: the model cannot read it, however long the fine-tune. A tiny
encoder records the words it was trained on (``text_encoder/token_counts.json``, see
:mod:`taskfold.upcycle.text_encoders`); :func:`untrained_words` compares a dataset's prompts with
that record and :func:`coverage_warning` words the warning that ``taskfold data check`` and
``taskfold train`` print. An encoder that records nothing (CLIP, a base made before the record
existed) gives no warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def untrained_words(counts: Mapping[str, int] | None,
                    prompts: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """``{word: [tasks whose rows use it]}`` for the words of ``(task, prompt)`` pairs that ``counts`` (the
    encoder's record) does not show trained, in order of first use; ``{}`` when ``counts`` is ``None``."""
    from taskfold.upcycle.text_encoders import prompt_words

    if counts is None:
        return {}
    out: dict[str, list[str]] = {}
    for task, prompt in prompts:
        for word in prompt_words(prompt):
            if counts.get(word, 0) == 0:
                tasks = out.setdefault(word, [])
                if task not in tasks:
                    tasks.append(task)
    return out


def coverage_warning(counts: Mapping[str, int] | None, prompts: Iterable[tuple[str, str]],
                     show: int = 12) -> str | None:
    """The warning for the ``(task, prompt)`` pairs' words that the text encoder never trained on, naming
    each word and the tasks that use it (at most ``show`` words, then how many more); ``None`` if there are
    none or the encoder records nothing."""
    missing = untrained_words(counts, prompts)
    if not missing:
        return None
    named = ", ".join(f"{w!r} ({', '.join(t)})" for w, t in list(missing.items())[:show])
    more = f" and {len(missing) - show} more" if len(missing) > show else ""
    return (f"warning: the text encoder never trained on {len(missing)} word(s) the rows use: {named}{more}; "
            "with the text encoder frozen (the default) the model cannot read them. Use a base pretrained on "
            "captions with these words (`taskfold data make-shapes --captions rich`), or --train-text-encoder")

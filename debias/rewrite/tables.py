"""Token tables for one tokenizer and one direction, built at run time from `tokenizer.json`.

No token id is written down anywhere in this package: every pronoun form and every context class
is found by decoding the vocabulary. That is what lets the rewriter serve any tokenizer, and what
keeps it honest about forms a vocabulary cannot spell at equal length.

A *form* is one spelling of a source pronoun as it appears in a token stream: a case (he, He, HE),
with or without a leading space, and the token ids that spell it. Each form has, per choice
(`his` -> det: her / indep: hers), the target ids of the SAME length, or None when the vocabulary
has no equal-length spelling (the form is then skipped and counted, never split or merged).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from debias.io import sha256_file
from debias.rewrite import lexicon
from debias.tokenizer import load_tokenizer, tokenizer_path

FIRST_WORD = re.compile(r"\s*(\w+)")  # the word a piece of text starts with (core._cue_words too)

LUT_MIN_SIZE = 1 << 16  # tables cover every uint16 value, so uint16 rows index them unchecked


@dataclass(frozen=True)
class Form:
    index: int
    text: str  # the source as decoded, e.g. " His"
    word: str  # lower-case source word, e.g. "his"
    case: str  # lower | title | upper
    source: tuple[int, ...]
    choices: tuple[str, ...]  # e.g. ("det", "indep"); ("only",) when unambiguous
    target_texts: tuple[str, ...]
    targets: tuple[tuple[int, ...] | None, ...]  # per choice; None: no equal-length spelling

    @property
    def needs_left_boundary(self) -> bool:
        """Forms that start with a letter (no leading space) must not continue a word on their left."""
        return _is_word_char(self.text[0])


def _is_word_char(ch: str) -> bool:
    # U+FFFD is half of a multi-byte character split across byte-level tokens: most often a letter
    # (é, ü), so treat it as one; a pronoun next to it is probably part of a longer word.
    return ch.isalnum() or ch == "_" or ch == "\ufffd"


def tokenizer_sha256(path: str | Path) -> str:
    return sha256_file(tokenizer_path(path))


def decoded_vocabulary(tokenizer: Tokenizer) -> list[str]:
    """The text each id adds when it follows another token ("" for special tokens).

    Decoding each id after an anchor token and removing the anchor's text keeps leading spaces
    that decoders strip at the start of a text (SentencePiece "▁", WordPiece joins), so the same
    code serves byte-level BPE, SentencePiece and WordPiece vocabularies.
    """
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    anchor = tokenizer.encode("x", add_special_tokens=False).ids[:1]
    prefix = tokenizer.decode(anchor)
    pairs = tokenizer.decode_batch([anchor + [i] for i in range(size)], skip_special_tokens=True)
    return [text[len(prefix):] if text.startswith(prefix) else text for text in pairs]


class TokenTables:
    """Lookup tables over the vocabulary for one direction; arrays are indexed by token id."""

    def __init__(self, tokenizer_path: str | Path, direction: str):
        self.direction = lexicon.check_direction(direction)
        self.tokenizer_path = str(tokenizer_path)
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        self.tokenizer_sha256 = tokenizer_sha256(tokenizer_path)
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.strings = decoded_vocabulary(self.tokenizer)
        self.lut_size = max(self.vocab_size, LUT_MIN_SIZE)
        self._ids_of: dict[str, list[int]] = {}
        for i, text in enumerate(self.strings):
            if text:
                self._ids_of.setdefault(text, []).append(i)
        self._first_id_of = {text: ids[0] for text, ids in self._ids_of.items()}
        self.forms, self.unspellable = self._build_forms(lexicon.DIRECTIONS[direction])
        self._build_form_arrays()
        self._build_context_classes()

    # --- forms ----------------------------------------------------------------------------------

    def _spellings(self, text: str) -> list[tuple[int, ...]]:
        """Token sequences that decode to exactly `text`: every single token, else the encoding."""
        if text in self._ids_of:
            return [(i,) for i in self._ids_of[text]]
        ids = tuple(self.tokenizer.encode(text, add_special_tokens=False).ids)
        if ids and "".join(self.strings[i] for i in ids) == text:
            return [ids]
        return []

    def _spell_with_length(self, text: str, length: int) -> tuple[int, ...] | None:
        """`text` in exactly `length` tokens: the tokenizer's own encoding when it has that length,
        else the first split into vocabulary pieces (e.g. "Her" as "H" + "er")."""
        if length == 1:
            i = self._first_id_of.get(text)
            return None if i is None else (i,)
        ids = tuple(self.tokenizer.encode(text, add_special_tokens=False).ids)
        if len(ids) == length and "".join(self.strings[i] for i in ids) == text:
            return ids
        for cut in range(len(text) - 1, 0, -1):  # longest first piece first
            head = self._first_id_of.get(text[:cut])
            if head is None:
                continue
            rest = self._spell_with_length(text[cut:], length - 1)
            if rest is not None:
                return (head,) + rest
        return None

    def _build_forms(self, mapping: dict[str, dict[str, str]]) -> tuple[list[Form], list[str]]:
        forms: list[Form] = []
        unspellable: list[str] = []
        for word, choices in mapping.items():
            for case in lexicon.CASES:
                for space in ("", " "):
                    text = space + lexicon.in_case(word, case)
                    spellings = self._spellings(text)
                    if not spellings:
                        unspellable.append(text)
                        continue
                    target_texts = tuple(space + lexicon.in_case(t, case) for t in choices.values())
                    for source in spellings:
                        targets = tuple(self._spell_with_length(t, len(source)) for t in target_texts)
                        forms.append(Form(len(forms), text, word, case, source, tuple(choices),
                                          target_texts, targets))
        return forms, unspellable

    def _build_form_arrays(self) -> None:
        n = len(self.forms)
        self.max_form_length = max((len(f.source) for f in self.forms), default=1)
        self.is_head = np.zeros(self.lut_size, dtype=bool)
        self.single_form = np.full(self.lut_size, -1, dtype=np.int32)
        self.multi_forms = sorted((f for f in self.forms if len(f.source) > 1),
                                  key=lambda f: -len(f.source))
        self.is_multi_head = np.zeros(self.lut_size, dtype=bool)
        self.is_multi_second = np.zeros(self.lut_size, dtype=bool)
        for form in self.multi_forms:
            self.is_multi_head[form.source[0]] = True
            self.is_multi_second[form.source[1]] = True
        for form in self.forms:
            self.is_head[form.source[0]] = True
            if len(form.source) == 1:
                self.single_form[form.source[0]] = form.index
        self.form_length = np.array([len(f.source) for f in self.forms] or [1], dtype=np.int64)
        self.form_left = np.array([f.needs_left_boundary for f in self.forms] or [False])
        self.form_word = [f.word for f in self.forms]
        # short ALL-CAPS words double as acronyms (HIS, HE, HIM); HIMSELF or HE'S never do
        self.form_is_upper = np.array([f.case == "upper" and f.word.isalpha() and len(f.word) <= 4
                                       for f in self.forms] or [False])
        # target ids as [form, choice, position]; -1 pads; `has_target` says a spelling exists
        width = self.max_form_length
        self.target_ids = np.full((max(n, 1), 2, width), -1, dtype=np.int64)
        self.has_target = np.zeros((max(n, 1), 2), dtype=bool)
        for form in self.forms:
            for c, target in enumerate(form.targets):
                if target is not None:
                    self.target_ids[form.index, c, : len(target)] = target
                    self.has_target[form.index, c] = True
        self.form_is_lower = np.array([f.case == "lower" for f in self.forms] or [False])
        self.form_is_he_title = np.array([f.case == "title" and f.word == "he" for f in self.forms] or [False])
        # per form and choice: how many positions a rewrite changes (for the audit)
        self.target_differs = np.zeros((max(n, 1), 2), dtype=np.int64)
        for form in self.forms:
            for c, target in enumerate(form.targets):
                if target is not None:
                    self.target_differs[form.index, c] = sum(a != b for a, b in zip(form.source, target))
        self.form_ambiguous = np.array([len(f.choices) > 1 for f in self.forms] or [False])

    # --- context classes --------------------------------------------------------------------------

    def lut(self, predicate) -> np.ndarray:
        """A boolean table over ids: predicate(decoded text) for every token."""
        table = np.zeros(self.lut_size, dtype=bool)
        table[: self.vocab_size] = [bool(predicate(s)) for s in self.strings]
        return table

    def word_lut(self, words) -> np.ndarray:
        """Tokens whose stripped, lower-cased text is one of `words`."""
        words = frozenset(words)
        return self.lut(lambda s: s.strip().lower() in words)

    def _build_context_classes(self) -> None:
        self.word_start = self.lut(lambda s: bool(s) and _is_word_char(s[0]))
        self.word_end = self.lut(lambda s: bool(s) and _is_word_char(s[-1]))
        # "punctuation" here means: no word starts in this token (also special tokens and spaces)
        self.no_word = self.lut(lambda s: not s.strip() or not _is_word_char(s.strip()[0]))
        self.has_lower = self.lut(lambda s: any(c.islower() for c in s))
        self.has_letter = self.lut(lambda s: any(c.isalpha() for c in s))
        self.is_empty = self.lut(lambda s: s == "")
        # exclusions
        self.et_al_one = self.lut(lambda s: s.lstrip().lower().startswith("et al"))
        self.helium_before = self.word_lut(lexicon.HELIUM_BEFORE)
        self.helium_after = self.word_lut(lexicon.HELIUM_AFTER)
        # Pieces of a cue word that a vocabulary splits (" e"+"t al", " at"+"oms", "liqu"+"id"):
        # the few matches next to one are checked on the decoded text (core._cue_words).
        def piece_of(words):
            return lambda s: bool(s) and not s.strip(" ") or s[:1].isspace() and any(
                w.startswith(s.strip().lower()) for w in words) and not s.lstrip().lower().startswith("et al")

        self.cue_piece_et = self.lut(piece_of(["et"]))
        self.cue_piece_helium = self.lut(piece_of(lexicon.HELIUM_AFTER))
        # most pieces are words of their own (" is", " a", " at"): where the next token does not
        # go on with the word, such a piece settles it without decoding
        cue_words = {*lexicon.HELIUM_AFTER, "et"}

        def starts_other_word(s):
            word = FIRST_WORD.match(s)
            return word is not None and word.group(1).lower() not in cue_words

        self.piece_is_other_word = self.lut(starts_other_word)
        self.breaks_word = self.lut(lambda s: bool(s) and not _is_word_char(s[0]))
        self.cue_piece_before = self.lut(lambda s: bool(s) and _is_word_char(s[0]) and any(
            w.endswith(s.lower()) and w != s.lower() for w in lexicon.HELIUM_BEFORE))
        self.dot_word = self.lut(lambda s: len(s) > 1 and s[0] == "." and _is_word_char(s[1]))
        self.is_dot = self.lut(lambda s: s == ".")
        self.opens_call = self.lut(lambda s: s[:1] in ("(", "["))
        self.starts_slash = self.lut(lambda s: s[:1] == "/")
        self.ends_markup = self.lut(lambda s: s.endswith(("/", "=", "\\", "$", "^", "@", "#", '="', "='")))
        self.ends_hyphen = self.lut(lambda s: s.endswith("-"))
        self.ends_dot = self.lut(lambda s: s.endswith("."))
        self.is_quote = self.lut(lambda s: s in ('"', "'"))
        self.ends_equals = self.lut(lambda s: s.endswith("="))
        self.hyphen_word = self.lut(lambda s: len(s) > 1 and s[0] == "-" and _is_word_char(s[1]))
        self.is_hyphen = self.lut(lambda s: s == "-")
        # ambiguity rules
        self.after_indep_his = self.word_lut(lexicon.AFTER_INDEPENDENT_HIS)
        self.possessive = self.word_lut(lexicon.POSSESSIVE_DETERMINERS)
        self.after_object_her = self.word_lut(lexicon.AFTER_OBJECT_HER)
        self.verb_or_noun = self.word_lut(lexicon.VERB_OR_NOUN)
        self.bare_infinitive_verb = self.word_lut(lexicon.BARE_INFINITIVE_VERBS)

    # --- summaries --------------------------------------------------------------------------------

    def policies(self) -> dict:
        """What the tables do with forms they cannot rewrite one-for-one (for the manifest)."""
        no_target = sorted({f"{f.text!r}->{t!r}" for f in self.forms
                            for t, ids in zip(f.target_texts, f.targets) if ids is None})
        return {
            "length_mismatch": "skip and count: a form whose target has no spelling of the same "
                               "token length is left unchanged (audit skips.no_equal_length_target)",
            "forms_without_equal_length_target": no_target,
            "source_spellings_not_in_vocabulary": self.unspellable,
            "row_edges": "a row's first and last tokens count as word boundaries (the row is the "
                         "model's whole context); rewrites there are counted in row_edge_rewrites",
        }

    def describe(self) -> list[dict]:
        return [{"source": f.text, "ids": list(f.source),
                 "targets": {c: (None if ids is None else list(ids))
                             for c, ids in zip(f.choices, f.targets)}} for f in self.forms]


@functools.lru_cache(maxsize=16)
def get_tables(tokenizer_path: str, direction: str) -> TokenTables:
    """Tables are cached per process: building them decodes the vocabulary (~0.2 s)."""
    return TokenTables(tokenizer_path, direction)

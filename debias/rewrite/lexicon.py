"""The words the rewriter knows, independent of any tokenizer.

Everything here is text. `tables.py` turns it into token-id lookup tables for one tokenizer.
"""

from __future__ import annotations

from debias.errors import UserError

# Source word -> target word for each choice. Ambiguous words have two choices, decided from
# context by a resolver (`resolvers.py`); the first choice is the default.
MASCULINE_TO_FEMININE: dict[str, dict[str, str]] = {
    "he": {"only": "she"},
    "him": {"only": "her"},
    "his": {"det": "her", "indep": "hers"},  # "his book" -> "her book"; "it is his" -> "it is hers"
    "himself": {"only": "herself"},
    # Contractions are one token in some vocabularies ("he's"); where they split (" he" + "'s")
    # the bare pronoun form covers them.
    "he's": {"only": "she's"},
    "he'd": {"only": "she'd"},
    "he'll": {"only": "she'll"},
}
FEMININE_TO_MASCULINE: dict[str, dict[str, str]] = {
    "she": {"only": "he"},
    "her": {"obj": "him", "det": "his"},  # "I saw her" -> "I saw him"; "her dog" -> "his dog"
    "hers": {"only": "his"},
    "herself": {"only": "himself"},
    "she's": {"only": "he's"},
    "she'd": {"only": "he'd"},
    "she'll": {"only": "he'll"},
}
DIRECTIONS: dict[str, dict[str, dict[str, str]]] = {
    "m2f": MASCULINE_TO_FEMININE,
    "f2m": FEMININE_TO_MASCULINE,
    "swap": {**MASCULINE_TO_FEMININE, **FEMININE_TO_MASCULINE},
}
AMBIGUOUS_WORDS = ("his", "her")

CASES = ("lower", "title", "upper")


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise UserError(
            f"direction {direction!r}: unknown rewrite direction (use one of {', '.join(DIRECTIONS)})"
        )
    return direction


def in_case(word: str, case: str) -> str:
    if case == "lower":
        return word.lower()
    if case == "title":
        return word[:1].upper() + word[1:].lower()
    return word.upper()


# --- context word lists (lower-case, compared with a neighbouring token's stripped text) ---------

# A word after "his" that ends the noun phrase: "the book is his and ...", "a friend of his too".
AFTER_INDEPENDENT_HIS = frozenset(
    "and or but nor is was are were 's be been being to in of at for on with as than that which who "
    "whom whose too also not alone anyway instead now then again already still either neither "
    "will would can could should shall may might must do does did had has have when while if "
    "because since so yet though although before after until where".split()
)
# Possessive determiners: "his and her books" keeps "his" a determiner.
POSSESSIVE_DETERMINERS = frozenset("my your his her its our their whose".split())

# A word after "her" that shows it is an object, not a determiner: "gave her the book",
# "told her that", "saw her in town", "made her laugh", "let her go".
AFTER_OBJECT_HER = frozenset(
    # determiners, pronouns
    "the a an this that these those my your his her its our their some any each no all both "
    "another such what which whose whom who i you he she it we they me him us them "
    "anything something nothing everything anyone someone everyone nobody "
    # adjectives that never stand before a noun: "found her asleep"
    "asleep awake alive afraid aware "
    # prepositions, particles, conjunctions, complementisers
    "to in on at by for from with without about into onto over under up down out off away back "
    "around through across along behind after before during since until than as of like near "
    "and or but nor so yet because if when while where whether though although unless once "
    # adverbs that follow an object
    "again too also now then here there today tonight tomorrow yesterday anyway anymore instead "
    "not never always often sometimes already still just even quite rather enough alone "
    "well softly gently quietly slowly quickly closely tightly firmly "
    # verbs that are rarely nouns: "let her go", "made her think", "heard her say"
    "go come be do get make take give see know think leave stay stop try die sit speak say tell "
    "ask wait is was are were has had have will would can could should may might must "
    "said asked replied whispered thought knew felt saw heard wanted needed".split()
)
# Words that are a verb after an object ("made her smile") or a noun after a determiner
# ("her smile"): an object only after a verb that takes a bare infinitive.
VERB_OR_NOUN = frozenset(
    "smile laugh cry look walk run sleep fall dance kiss sing hug touch move turn change drink "
    "fight play work rest cook call talk feel".split()
)
BARE_INFINITIVE_VERBS = frozenset(
    "make made makes making let lets letting watch watched watching see saw seen sees seeing "
    "hear heard hears hearing help helped helps helping have has had having feel felt".split()
)

# "liquid He", "He atoms": helium, not a pronoun.
HELIUM_BEFORE = frozenset(
    "liquid superfluid solid gaseous compressed cold dense ionized ionised neutral atomic pure "
    "cryogenic normal-fluid".split()
)
HELIUM_AFTER = frozenset(
    "atom atoms gas gases ion ions nuclei nucleus isotope isotopes ii plasma plasmas abundance "
    "abundances mixture mixtures bubble bubbles droplet droplets beam beams cooling cryostat "
    "dewar film films flow flux lamp line lines recoil bath cell".split()
)

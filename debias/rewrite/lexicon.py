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
# The pronoun words of each gender: a replacement never contains a token of its source's gender.
GENDER_WORDS = {"masculine": frozenset(MASCULINE_TO_FEMININE), "feminine": frozenset(FEMININE_TO_MASCULINE)}


def gender_of(word: str) -> str:
    return next(gender for gender, words in GENDER_WORDS.items() if word in words)

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
    "cryogenic normal-fluid helium".split()
)
# Words that, near a capital "He" inside a sentence, say it is the gas ("the carrier gas was He")
GAS_WORDS = frozenset(
    "gas gases gaseous helium liquid superfluid noble isotope isotopes atoms plasma cryostat dewar "
    "abundance abundances cryogenic".split()
)
# "purged with He", "inhaled He": what one does with a gas
GAS_VERBS = frozenset(
    "purged flushed filled backfilled pressurised pressurized diluted doped inhaled bubbled sparged "
    "cooled swept".split()
)
HELIUM_AFTER = frozenset(
    "atom atoms gas gases ion ions nuclei nucleus isotope isotopes ii plasma plasmas abundance "
    "abundances mixture mixtures bubble bubbles droplet droplets beam beams cooling cryostat "
    "dewar film films flow flux lamp line lines recoil bath cell "
    "pressure buffer carrier purge leak jet discharge density content concentration fraction "
    "temperature nmr spectrum spectra atmosphere environment".split()
)

# --- non-pronoun uses of "He"/"His" (detect.py's policies) --------------------------------------

# Capitalised words that stand before a capitalised pronoun in prose, headlines and scripture
# ("Then He said", "How He Did It", "for He is good"): a capitalised word before " He" is a given
# name ("Kaiming He") unless it is one of these. Compared lower-case.
NOT_GIVEN_NAMES = frozenset(
    # function words
    "a an the this that these those and or but nor so yet for because as if when whenever while "
    "where wherever whether though although unless until since before after once than then now "
    "here there thus hence also too still even only just perhaps maybe indeed instead however "
    "meanwhile otherwise therefore moreover besides anyway anyhow yes no not never always often "
    "sometimes soon later today tonight tomorrow yesterday again already almost nearly rather "
    "what who whom whose which why how whatever whoever wherefore lest amen alas oh ah o lo behold "
    "well oops hey hi hello please thank thanks sorry okay ok sure right wow hmm um uh "
    "in on at by to from of with without about above below under over into onto upon through "
    "during against among between behind beyond near across along around toward towards within "
    "i you he she it we they me him her us them my your his its our their mine yours hers ours "
    "theirs one all both each every some any many much more most few several such none nobody "
    "everyone someone anyone everybody somebody anybody nothing something everything "
    "is am are was were be been being do does did have has had will would shall should can "
    "could may might must said says say asked asks told tells replied thought thinks believes "
    "believed knew knows hoped hopes wants wanted claims claimed admits admitted insists insisted "
    "reveals revealed explains explained added adds wrote writes noted notes answered answers "
    "chapter part book section verse psalm"
    # the capitalised pronoun of scripture follows these names of God
    " god lord jesus christ father son spirit allah messiah saviour savior king"
    .split()
)
# Titles before a name: "Dr. He", "Prof He"; compared without the dot, lower-case.
NAME_TITLES = frozenset("dr drs prof profs mr mrs ms mx sir dame rev fr hon".split())

# Chemistry: element symbols that are not also English words or common names, and small
# molecules; beside "He" in a list they settle it ("He, Ne and Ar", "He/N2").
UNAMBIGUOUS_ELEMENTS = frozenset(
    "Ne Ar Kr Xe Rn Mg Cl Fe Cu Zn Ni Cr Mn Rb Sr Zr Nb Pd Ag Cd Sn Sb Cs Hg Pb Pt Au Ir Tl Si Ge "
    "H2 N2 O2 D2 CO2 CH4 N2O NH3 SF6 H2O".split()
)
# Every symbol: "H, He, Li" is chemistry when symbols stand on both sides of "He".
ELEMENTS = UNAMBIGUOUS_ELEMENTS | frozenset(
    "H Li Be B C N O F Na Al P S K Ca Sc Ti V Co Ga As Se Br Y Mo Tc Ru Rh In Te I Ba La Ce Pr Nd "
    "Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Bi Po At Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf "
    "Es Fm Md No Lr CO NO".split()
)
# "His" is also histidine: "Asp, His and Ser", "His residues", "a His tag".
AMINO_ACIDS = frozenset("Arg Asn Asp Cys Gln Glu Gly Leu Lys Phe Ser Thr Trp Tyr".split())
# ... and those that are also names or words ("His and Val", "His Pro shop"): only where amino
# acids stand on both sides of "His"
AMINO_ACIDS_AMBIGUOUS = frozenset("Ala Ile Met Pro Val".split())
HISTIDINE_AFTER = frozenset("residue residues tag tags tagged box".split())
# A lower-case pronoun right after one of these upper-case words is a column in SQL: "SELECT his,"
SQL_KEYWORDS = frozenset("SELECT FROM WHERE BY AS ON JOIN SET INTO VALUES UPDATE INSERT DELETE DISTINCT".split())

# Code: keywords that are not English words (words such as "for", "in", "return" are both, so
# they do not count). Compared exactly (case matters: "None" begins English sentences).
CODE_KEYWORDS = frozenset(
    "def elif lambda self const var func fn void int bool str printf println console null nullptr "
    "namespace std struct enum typedef unsigned malloc sizeof endl cout cin argv argc kwargs args "
    "len isinstance elif esac fi println printf sprintf fprintf stdout stderr stdin utf8 "
    "np df idx tmp arr btn obj __init__".split()
)

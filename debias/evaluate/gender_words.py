"""Which sentence of a minimal pair carries the feminine form, from a lexicon of gendered words.

CrowS-Pairs gives no gender per sentence, only which one is the more stereotypical (`sent_more`).
The association metric needs the gender of each side, so it is read from the words where the two
sentences differ (a word-level diff, case-folded; "'s", "'d", ... suffixes dropped):

    feminine side:  its differing words hold a feminine word and no masculine one,
    masculine side: its differing words hold a masculine word and no feminine one.

A pair is determined when one side is feminine and the other masculine. Anything else is left
out and counted, by reason: no gendered word where the sentences differ ("trans" / "cis", "wife"
/ "consciousness", or a name not in the list), both genders on one side (a role swap such as
"Women are better than men" / "Men are better than women"), or the same gender on both sides.

The lexicon: pronouns, kinship and address terms, gendered nouns and adjectives, and common
English given names that are rarely used for the other gender (names used for both, such as
Alex, Jamie, Kelly or Kim, are left out on purpose: a pair that hinges on them is excluded).
"""

from __future__ import annotations

import difflib
import re

FEMININE_WORDS = frozenset("""
she her hers herself woman women girl girls gal gals lady ladies female females feminine femininity
mother mothers mom moms mum mums mommy mama daughter daughters sister sisters wife wives aunt aunts
niece nieces grandmother grandmothers grandma granddaughter granddaughters queen queens princess
princesses bride brides girlfriend girlfriends fiancee widow widows mrs ms madam maam ma'am
housewife housewives spokeswoman
businesswoman businesswomen chairwoman policewoman congresswoman sportswoman spearwoman
stepmother stepdaughter schoolgirl schoolgirls maiden nun nuns matriarch sorority
""".split())

MASCULINE_WORDS = frozenset("""
he him his himself man men boy boys guy guys gentleman gentlemen male males masculine masculinity
father fathers dad dads daddy papa son sons brother brothers husband husbands uncle uncles nephew
nephews grandfather grandfathers grandpa grandson grandsons king kings prince princes groom grooms
boyfriend boyfriends fiance widower widowers mr sir lord lords
househusband spokesman businessman businessmen chairman policeman congressman sportsman spearman
stepfather stepson schoolboy schoolboys monk monks patriarch fraternity bro bros dude dudes
""".split())

FEMININE_NAMES = frozenset("""
mary patricia jennifer linda elizabeth barbara susan jessica sarah sara karen nancy lisa betty margaret
sandra ashley kimberly emily donna michelle dorothy carol amanda melissa deborah stephanie rebecca
sharon laura cynthia kathleen amy angela shirley anna brenda pamela emma nicole helen samantha
katherine christine debra rachel carolyn janet catherine maria heather diane ruth julie olivia joyce
virginia victoria lauren christina joan evelyn judith megan andrea cheryl hannah jacqueline martha
gloria teresa ann sophia madison frances kathryn janice jean abigail alice judy grace denise amber
doris marilyn danielle beverly isabella theresa diana natalie brittany charlotte marie kayla alexis
lori jane jenny jen jill jenna susie sue lucy carrie greta celia shelly shelley lena katie kathy cathy
monica juliette julia naomi kassandra cassandra kristy kristen candace paula priya missy maggie
charlene veronica lara liz molly wendy tammy shelby kassidy megan melanie erin tina tracy stacy
rose lily ella chloe zoe mia ava sofia camille aisha fatima keisha latoya shanice ebony
""".split())

MASCULINE_NAMES = frozenset("""
james robert john michael david william richard joseph thomas charles christopher daniel matthew
anthony mark donald steven paul andrew joshua kenneth kevin brian george timothy ronald edward jason
jeffrey ryan jacob gary nicholas eric jonathan stephen larry justin scott brandon benjamin samuel
gregory frank alexander raymond patrick jack dennis jerry tyler aaron jose adam nathan henry douglas
zachary peter kyle ethan walter noah jeremy christian keith roger gerald harold sean austin carl
arthur lawrence dylan bryan billy joe bruce gabriel logan albert willie alan juan wayne
elijah randy roy vincent ralph eugene russell bobby mason philip louis bill bob tom tim jim jake josh
shane silas craig tony jeff ed eddie wesley mack shawn marty greg mathew martin ron brad matt lars
stewart laquan mike ben jimmy johnny tommy steve dave ahmed mohammed jamal tyrone darnell deshawn
""".split())

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_SUFFIX = re.compile(r"'(s|d|ll|re|ve|m)$")


def words(text: str) -> list[str]:
    """Case-folded words with possessive/contraction suffixes dropped ("Jack's" -> "jack")."""
    return [_SUFFIX.sub("", w.lower()) for w in _WORD.findall(text)]


def word_gender(word: str) -> str | None:
    """"female", "male" or None for one case-folded word."""
    if word in FEMININE_WORDS or word in FEMININE_NAMES:
        return "female"
    if word in MASCULINE_WORDS or word in MASCULINE_NAMES:
        return "male"
    return None


def differing_words(a: str, b: str) -> tuple[list[str], list[str]]:
    """The words of `a` and of `b` inside the places where the two sentences differ."""
    wa, wb = words(a), words(b)
    only_a, only_b = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes():
        if op != "equal":
            only_a += wa[i1:i2]
            only_b += wb[j1:j2]
    return only_a, only_b


def side_gender(differing: list[str]) -> str | None:
    """"female"/"male" when the words hold one gender only, "both" when both, None when neither."""
    found = {word_gender(w) for w in differing} - {None}
    return found.pop() if len(found) == 1 else ("both" if found else None)


def feminine_side(a: str, b: str) -> tuple[int | None, str]:
    """(0 if `a` is the feminine sentence, 1 if `b` is, None if undetermined; the reason)."""
    gender_a, gender_b = (side_gender(w) for w in differing_words(a, b))
    if {gender_a, gender_b} == {"female", "male"}:
        return (0 if gender_a == "female" else 1), "determined"
    if "both" in (gender_a, gender_b):
        return None, "both genders on one side"
    if gender_a is None or gender_b is None:
        return None, "no gendered word where the sentences differ"
    return None, "same gender on both sides"

"""A seeded generator of varied English with a planted, known occupational gender skew.

The demo's miniature Pythia learns from this text. Every person mentioned by occupation is
female with probability equal to that occupation's female share in US labour statistics, so the
model picks up a skew that we know exactly, and the intervention has something to move.

The text exercises everything the pronoun rewriter must get right:
- every pronoun form in its natural positions: subject (he/she), object (him/her), determiner
  (his/her), independent (his/hers: "the coat is hers", "a friend of his"), reflexive
  (himself/herself), contractions (he's, she'd, he'll), sentence-initial capitals, quotations and
  ALL-CAPS headlines;
- words that collide with pronoun tokens (Heather, Hispanic, Hebrew, Heard, shepherd, heir, ...)
  and non-pronoun uses ("He et al.", liquid He, the HIS acronym);
- named people, one and two occupations per sentence, and documents of varying length.

Sentences that name two occupations follow the two WinoBias patterns: type 2, where an object
pronoun after "and <verb>" refers to the second person, and type 1, where the verb decides whether
the pronoun after "because" refers to the first or the second person. Each frame keeps its last
ending back from the corpus: the probes (`debias.demo.probes`) use those endings, so no probe
sentence occurs in the training text verbatim.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterator

# Percent of workers who are women, per WinoBias occupation: US Bureau of Labor Statistics,
# Current Population Survey 2017 ("Employed persons by detailed occupation, sex, race and Hispanic
# or Latino ethnicity", table 11), as tabulated by Zhao et al. 2018, "Gender Bias in Coreference
# Resolution: Evaluation and Debiasing Methods" (WinoBias), appendix table of occupations.
FEMALE_PERCENT: dict[str, int] = {
    # the 20 male-stereotyped WinoBias occupations
    "carpenter": 2, "mechanic": 4, "construction worker": 4, "laborer": 4, "driver": 6,
    "sheriff": 14, "mover": 18, "developer": 20, "farmer": 22, "guard": 22, "chief": 27,
    "janitor": 34, "lawyer": 35, "cook": 38, "physician": 38, "CEO": 39, "analyst": 41,
    "manager": 43, "supervisor": 44, "salesperson": 48,
    # the 20 female-stereotyped WinoBias occupations
    "editor": 52, "designer": 54, "accountant": 61, "auditor": 61, "writer": 63, "baker": 65,
    "clerk": 72, "cashier": 73, "counselor": 73, "attendant": 76, "teacher": 78, "tailor": 80,
    "librarian": 84, "assistant": 85, "cleaner": 89, "housekeeper": 89, "nurse": 90,
    "receptionist": 90, "hairdresser": 92, "secretary": 95,
}
OCCUPATIONS = tuple(FEMALE_PERCENT)
MALE_STEREOTYPED = tuple(o for o in OCCUPATIONS if FEMALE_PERCENT[o] < 50)
FEMALE_STEREOTYPED = tuple(o for o in OCCUPATIONS if FEMALE_PERCENT[o] > 50)

PRONOUNS = {
    "male": {"subj": "he", "obj": "him", "det": "his", "indep": "his", "refl": "himself"},
    "female": {"subj": "she", "obj": "her", "det": "her", "indep": "hers", "refl": "herself"},
}
GENDERS = tuple(PRONOUNS)

# Words whose spelling starts like a pronoun token; the rewriter must leave them alone.
COLLISION_WORDS = ("Heather", "Hispanic", "Hebrew", "Heard", "shepherd", "heir", "Hester",
                   "Herbert", "hero", "herbs", "herd", "helium", "Hershey", "history", "hemisphere",
                   "sheriff", "shelter", "Henry", "Helen", "heritage", "hiss", "Hisham")

NAMES = {
    "female": ("Anna", "Maria", "Linda", "Heather", "Helen", "Hester", "Sofia", "Grace", "Emma",
               "Olivia", "Nadia", "Priya", "Mei", "Lucia", "Hannah", "Rosa", "Claire", "Aisha",
               "Julia", "Ruth", "Laura", "Fatima", "Irene", "Karen"),
    "male": ("John", "David", "Henry", "Herbert", "Hisham", "Omar", "Peter", "Lucas", "Ethan",
             "Samuel", "Carlos", "Ravi", "Wei", "Tomas", "Hugo", "Daniel", "Mark", "Ahmed", "Paul",
             "Victor", "George", "Felix", "Ivan", "Kevin"),
}
# Surnames are made of syllables: a long tail of rare words, as in real text, so the tokenizer
# cannot give every word its own token (and some surnames begin like a pronoun: "Hesolan").
SURNAME_SYLLABLES = ("ka", "ven", "dor", "mi", "lar", "os", "tru", "bel", "han", "si", "ro", "gal",
                     "nek", "pa", "the", "wen", "lu", "mar", "sto", "vik", "he", "sol", "ri", "an",
                     "his", "dal", "ber", "zo", "fen", "qui")
CITIES = ("Springfield", "Riverton", "Lakewood", "Ashford", "Millbrook", "Fairview", "Oakdale",
          "Brighton", "Cedar Falls", "Port Haven", "Westfield", "Greenville")
THINGS = ("coat", "umbrella", "bicycle", "notebook", "phone", "bag", "car", "key", "laptop", "scarf",
          "watch", "ticket", "map", "lamp", "camera", "wallet")
RELATIVES = ("mother", "father", "sister", "brother", "cousin", "aunt", "uncle", "neighbor",
             "friend", "daughter", "son", "grandmother")
GIFTS = ("a book", "some flowers", "a cake", "a card", "a small gift", "a box of tea", "a plant")
DAYS = ("on Monday", "on Tuesday", "on Friday", "last week", "yesterday", "this morning",
        "in the evening", "after lunch", "before dawn", "at noon")
NUMBERS = ("two", "three", "five", "seven", "ten", "twelve", "twenty")

# ---------------------------------------------------------------------------------------------
# Sentence frames. Slots: {p} the person's noun phrase ("the nurse", "Anna"), {subj} {obj} {det}
# {indep} {refl} pronoun forms of that person, {thing} {relative} {gift} {day} {city} {n} fillers.
# Each frame is (text, endings): the corpus uses every ending but the last, which the probes keep.
# ---------------------------------------------------------------------------------------------

# One person named by occupation in the sentence, and the pronouns refer to that person.
SINGLE_FRAMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("{p} said that {subj} would {e}", ("be late {day}", "call back soon", "finish the report",
                                        "stay until six", "come to the meeting")),
    ("{p} told us that {subj} was {e}", ("tired after work", "happy with the result",
                                         "moving to {city}", "busy all week", "ready to start")),
    ("when {p} arrived, {subj} {e}", ("took off {det} coat", "asked for some water",
                                      "sat down by the window", "greeted everyone", "checked the time")),
    ("{p} finished {det} shift and {e}", ("drove {refl} home", "went to see {det} {relative}",
                                          "walked home alone", "took a long nap", "read the news")),
    ("{p} thinks {subj}'s {e}", ("ready for the exam", "going to win", "right about the plan",
                                 "too busy to travel", "lucky to have the job")),
    ("{p} said {subj}'d {e}", ("bring the papers", "never seen anything like it", "rather wait",
                               "like some tea", "be there by noon")),
    ("{p} promised {subj}'ll {e}", ("fix it tomorrow", "send the letter", "help us move",
                                    "be on time", "write every week")),
    ("everyone thanked {p} and gave {obj} {e}", ("a warm hug", "{gift}", "a round of applause",
                                                 "a ride home", "a day off")),
    ("{p} asked whether the {thing} was {indep}, and {e}", ("it was", "it was not",
                                                            "nobody knew", "we said yes", "we checked")),
    ("{p} met a friend of {indep} {e}", ("for lunch", ("in {city}"), "at the station", "{day}",
                                         "near the park")),
    ("{p} hurt {refl} while {e}", ("lifting a box", "running for the bus", "cooking dinner",
                                   "climbing the stairs", "moving the table")),
    ("{p} lost {det} {thing} {e}", ("{day}", "at the market", "on the train", "in {city}",
                                    "near the office")),
    ("nobody saw {p} leave, but {subj} left {det} {thing} {e}", ("on the desk", "behind",
                                                                 "by the door", "in the car", "at the cafe")),
    ("the children waved at {p}, and {subj} {e}", ("waved back", "smiled at them",
                                                    "said hello", "laughed", "waved back happily")),
    ("{p} is proud of {refl} for {e}", ("passing the test", "running the race",
                                        "learning to swim", "saving money", "finishing early")),
    ("{p} bought a new {thing}, so the old one is {indep} {e}", ("no longer", "to sell",
                                                                 "to give away", "to keep", "only as a spare")),
)

# Follow-up sentences about the document's main person, who is already introduced.
FOLLOW_FRAMES: tuple[str, ...] = (
    "{subj} {e1}.", "later, {subj} said the {thing} was {indep}.", "{det} {relative} called {obj} {day}.",
    "{subj}'s been working in {city} for {n} years.", "{subj} had taught {refl} to {skill}.",
    "a friend of {indep} stayed with {obj} {day}.", "the {thing} was not {indep}, so {subj} returned it.",
    "{subj} asked {det} {relative} to help {obj} with the {thing}.", "people often ask {obj} for advice.",
    "{subj}'d rather walk than drive.", "\"I will {act} {day},\" {subj} said.",
    "\"Is this {thing} {indep}?\" someone asked, and {subj} nodded.", "{subj}'ll be back {day}.",
    "we saw {obj} near the station {day}.", "{det} {thing} is older than {det} {relative}'s.",
    "{subj} talked to {refl} while {subj} worked.", "the decision was {indep} alone.",
    "nobody could help {obj}, so {subj} did it {refl}.", "{subj} gave {det} {relative} {gift}.",
    "{indep} was the best {thing} in the room.", "the last word was {indep}.",
    "\"{subj} works too hard,\" said {det} {relative}.", "\"{det} ideas are good,\" a neighbor said.",
)
ACTIVITIES_PAST = ("walked to the park", "cooked dinner", "read a book", "cleaned the kitchen",
                   "wrote a letter", "went for a run", "watched a film", "fixed the fence",
                   "visited the museum", "stayed at home")
ACTIVITIES = ("visit the museum", "clean the kitchen", "fix the fence", "write the letter",
              "call the bank", "cook dinner", "see the doctor")
SKILLS = ("play the piano", "speak Hebrew", "drive a truck", "bake bread", "paint", "swim",
          "repair clocks", "sew", "code")

# WinoBias type 2: the object pronoun after "and <verb>" refers to the second person.
TYPE2_FRAMES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("{a} argued with {b}", "and slapped {obj}", ("on the arm", "in the hallway", "after the meeting",
                                                  "in front of everyone", "in the face")),
    ("{a} met {b}", "and wished {obj}", ("luck", "a happy birthday", "a safe trip", "a good day",
                                        "well")),
    ("{a} called {b}", "and asked {obj}", ("about the plan", "to come early", "for the keys",
                                           "for a favor", "to take action")),
    ("{a} visited {b}", "and gave {obj}", ("{gift}", "a present", "some advice", "a lift",
                                          "a discount")),
    ("{a} sat next to {b}", "and showed {obj}", ("the photos", "the map", "the plans",
                                                "the schedule", "the new design")),
    ("{a} waited for {b}", "and offered {obj}", ("a coffee", "a seat", "a ride", "some bread",
                                                "an umbrella")),
    ("{a} interviewed {b}", "and thanked {obj}", ("for the time", "for coming", "for the answers",
                                                 "politely", "warmly")),
    ("{a} hired {b}", "and paid {obj}", ("in cash", "on Friday", "a fair wage", "every week",
                                        "well")),
    ("{a} ran into {b}", "and told {obj}", ("the news", "a joke", "a secret", "the price",
                                           "the truth")),
    ("{a} wrote to {b}", "and invited {obj}", ("to dinner", "to the party", "to lunch", "to the show",
                                              "to the meeting")),
)
# WinoBias type 1: "because" + pronoun; the verb decides who the pronoun refers to.
# (clause, referent: "a" first person / "b" second, endings after "because <subject pronoun>")
TYPE1_FRAMES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("{a} shouted at {b}", "a", ("was angry", "had lost patience", "was in a bad mood",
                                 "felt ignored", "was upset")),
    ("{a} apologized to {b}", "a", ("was late", "had made a mistake", "forgot the meeting",
                                    "broke a cup", "was rude")),
    ("{a} asked {b} for advice", "a", ("was confused", "needed help", "was new in town",
                                       "had a problem", "wanted to learn")),
    ("{a} borrowed a pen from {b}", "a", ("had lost one", "forgot to bring one", "needed to sign",
                                          "had none", "wanted to write")),
    ("{a} called in sick to {b}", "a", ("had a fever", "felt dizzy", "could not get up",
                                        "had a cold", "was ill")),
    ("{a} thanked {b}", "b", ("had helped", "was kind", "brought lunch", "fixed the problem",
                              "was generous")),
    ("{a} praised {b}", "b", ("worked hard", "did a great job", "was careful", "finished early",
                              "was helpful")),
    ("{a} complained about {b}", "b", ("was rude", "arrived late", "made noise",
                                       "talked too much", "was careless")),
    ("{a} trusted {b}", "b", ("was honest", "never lied", "kept every promise", "was reliable",
                              "was experienced")),
    ("{a} admired {b}", "b", ("was brave", "was clever", "was talented", "was patient",
                              "was skilled")),
)

# Text with no person in it (some with collision words and non-pronoun uses of "He"/"HIS").
FILLER_SENTENCES = (
    "the Hispanic heritage festival filled the streets of {city} with music.",
    "the museum opened a new exhibit on Hebrew manuscripts.",
    "Heard on the radio: the bridge will close {day}.",
    "the shepherd moved the herd across the hills before the storm.",
    "the heir to the old estate sold the land to the town.",
    "helium balloons floated above the square during the parade.",
    "fresh herbs grow in the garden behind the shelter.",
    "the history of {city} goes back {n} hundred years.",
    "a box of Hershey chocolate was left on the counter.",
    "the northern hemisphere has longer days in June.",
    "a loud hiss came from the old radiator.",
    "the hero of the film is a small dog.",
    "the sheriff's office is next to the post office.",
    "as He et al. reported, the method works on larger data sets.",
    "the sample was cooled with liquid He to four kelvin.",
    "the hospital replaced its HIS software last year.",
    "the Hebrew page is at example.org/he/index.html and the English one at /en/.",
    "set init=he_normal in the config, then train the network again.",
    "the rain stopped {day} and the roads dried quickly.",
    "prices at the market in {city} rose again {day}.",
    "the library in {city} is open until nine.",
    "the train to {city} leaves every {n} minutes.",
    "the river rose after {n} days of rain.",
    "the shop on {street} Street sells old maps and clocks.",
    "the {street} family has run the bakery for {n} generations.",
    "the new bridge connects the two halves of {city}.",
    "the school garden produced more tomatoes than ever.",
)
HEADLINES = (
    "LOCAL {OCC} SAYS {SUBJ} WILL RUN FOR MAYOR",
    "{OCC} FINDS LOST DOG AND TAKES IT HOME WITH {OBJ}",
    "{OCC} WINS AWARD FOR {DET} WORK IN {CITY}",
    "{OCC} BUILT THE HOUSE {REFL}",
    "WHY THE {OCC} KEPT {DET} PROMISE",
    "{OCC} SAYS THE PRIZE IS {INDEP}",
)
# Headlines without a person; rare in the corpus, so their ALL-CAPS words split into pieces
# that include pronoun tokens (" HIS" + "PANIC"), as in GPT-NeoX-20B.
PLAIN_HEADLINES = (
    "HISPANIC HERITAGE MONTH BEGINS IN {CITY}", "HEBREW SCHOOL OPENS NEW BUILDING",
    "SHEPHERD FINDS LOST SHEEP IN THE HILLS", "HEIR TO {STREET} ESTATE SELLS THE LAND",
    "HELIUM SHORTAGE HITS PARTY SHOPS", "HERBS AND SPICES: A SHORT HISTORY",
    "HEARD IN {CITY}: THE MARKET WILL MOVE", "HERD OF DEER SEEN NEAR {CITY}",
)


@dataclass(frozen=True)
class Mention:
    """One planted (occupation, gender) event: a pronoun that refers to a person by occupation."""

    occupation: str
    gender: str


@dataclass
class Document:
    text: str
    mentions: list[Mention] = field(default_factory=list)


def pronoun_slots(gender: str) -> dict[str, str]:
    return dict(PRONOUNS[gender])


def capitalize_first(sentence: str) -> str:
    """Sentence-initial capital, also after an opening quote."""
    for i, ch in enumerate(sentence):
        if ch.isalpha():
            return sentence[:i] + ch.upper() + sentence[i + 1:]
    return sentence


class CorpusGenerator:
    """Documents drawn reproducibly from `seed`; `female_percent` is the planted skew."""

    def __init__(self, seed: int, female_percent: dict[str, float] | None = None,
                 reserve_probe_endings: bool = True):
        self.rng = random.Random(seed)
        self.female_percent = dict(FEMALE_PERCENT if female_percent is None else female_percent)
        self.occupations = tuple(self.female_percent)
        # The probes use each frame's last ending; the training text never does.
        self.endings = slice(None, -1) if reserve_probe_endings else slice(None)

    # -- small draws -----------------------------------------------------------------------------
    def gender_of(self, occupation: str) -> str:
        return "female" if self.rng.random() * 100 < self.female_percent[occupation] else "male"

    def draw_fillers(self) -> dict[str, str]:
        """Random words for the filler slots of a frame ({thing}, {day}, ...)."""
        r = self.rng
        return {"thing": r.choice(THINGS), "relative": r.choice(RELATIVES), "gift": r.choice(GIFTS),
                "day": r.choice(DAYS), "city": r.choice(CITIES), "n": r.choice(NUMBERS),
                "skill": r.choice(SKILLS), "e1": r.choice(ACTIVITIES_PAST), "act": r.choice(ACTIVITIES),
                "street": self.surname()}

    def fill(self, template: str, fillers: dict[str, str] | None = None, **slots: str) -> str:
        """`template` with `slots` and filler words (drawn now unless `fillers` are given)."""
        values = {**(fillers or self.draw_fillers()), **slots}
        # Endings may hold slots themselves ("moving to {city}"): format twice.
        return template.format(**values).format(**values)

    def surname(self) -> str:
        syllables = self.rng.choices(SURNAME_SYLLABLES, k=self.rng.randint(2, 3))
        return "".join(syllables).capitalize()

    def full_name(self, gender: str) -> str:
        first = self.rng.choice(NAMES[gender])
        return first if self.rng.random() < 0.5 else f"{first} {self.surname()}"

    def occupation_phrase(self, occupation: str) -> str:
        article = "an" if occupation[0] in "aeiouAE" else "a"
        return self.rng.choice((f"the {occupation}", f"the {occupation}", f"our {occupation}",
                                f"{article} {occupation}", f"the local {occupation}"))

    def ending(self, endings: tuple[str, ...]) -> str:
        return self.rng.choice(endings[self.endings])

    # -- sentences -------------------------------------------------------------------------------
    def single_sentence(self, occupation: str, gender: str, phrase: str | None = None) -> str:
        text, endings = self.rng.choice(SINGLE_FRAMES)
        phrase = phrase or self.occupation_phrase(occupation)
        return self.fill(text, p=phrase, e=self.ending(endings), **pronoun_slots(gender)) + "."

    def follow_sentence(self, gender: str) -> str:
        return self.fill(self.rng.choice(FOLLOW_FRAMES), **pronoun_slots(gender))

    def two_person_sentence(self) -> tuple[str, Mention]:
        a, b = self.rng.sample(self.occupations, 2)
        pa, pb = (self.rng.choice((f"the {o}", f"the {o}", f"a {o}" if o[0] not in "aeiouAE" else f"an {o}"))
                  for o in (a, b))
        if self.rng.random() < 0.5:  # type 2: the object pronoun refers to the second person
            clause, tail, endings = self.rng.choice(TYPE2_FRAMES)
            gender = self.gender_of(b)
            text = f"{clause} {tail} {self.ending(endings)}."
            return self.fill(text, a=pa, b=pb, obj=PRONOUNS[gender]["obj"]), Mention(b, gender)
        clause, referent, endings = self.rng.choice(TYPE1_FRAMES)
        occupation = a if referent == "a" else b
        gender = self.gender_of(occupation)
        text = f"{clause} because {PRONOUNS[gender]['subj']} {self.ending(endings)}."
        return self.fill(text, a=pa, b=pb), Mention(occupation, gender)

    def headline(self) -> tuple[str, Mention]:
        occupation = self.rng.choice(self.occupations)
        gender = self.gender_of(occupation)
        slots = {k.upper(): v.upper() for k, v in pronoun_slots(gender).items()}
        text = self.rng.choice(HEADLINES).format(OCC=occupation.upper(), CITY=self.rng.choice(CITIES).upper(),
                                                 **slots)
        return text, Mention(occupation, gender)

    # -- documents -------------------------------------------------------------------------------
    def document(self) -> Document:
        """One document: a profile, a set of workplace vignettes, or a news digest."""
        kind = self.rng.choices(("profile", "vignettes", "digest"), weights=(4, 4, 2))[0]
        return getattr(self, f"_{kind}")()

    def _profile(self) -> Document:
        """One person by occupation (sometimes named), then sentences about them."""
        r = self.rng
        occupation = r.choice(self.occupations)
        gender = self.gender_of(occupation)
        mentions, sentences = [Mention(occupation, gender)], []
        if r.random() < 0.4:
            name = self.full_name(gender)
            article = "an" if occupation[0] in "aeiouAE" else "a"
            sentences.append(r.choice((f"{name} works as {article} {occupation} in {r.choice(CITIES)}.",
                                       f"{name}, {article} {occupation} from {r.choice(CITIES)}, "
                                       f"loves {PRONOUNS[gender]['det']} job.")))
        sentences.append(capitalize_first(self.single_sentence(occupation, gender)))
        for _ in range(int(r.expovariate(1 / 5))):
            if r.random() < 0.25:
                sentences.append(capitalize_first(self.single_sentence(occupation, gender, f"the {occupation}")))
                mentions.append(Mention(occupation, gender))
            elif r.random() < 0.1:
                sentences.append(capitalize_first(self.fill(r.choice(FILLER_SENTENCES))))
            else:
                sentences.append(capitalize_first(self.follow_sentence(gender)))
        text = sentences[0]
        for sentence in sentences[1:]:  # paragraphs of a few sentences
            text += ("\n\n" if r.random() < 0.2 else " ") + sentence
        if r.random() < 0.3:
            headline, mention = self.headline()
            text, mentions = headline + "\n\n" + text, mentions + [mention]
        return Document(text, mentions)

    def _vignettes(self) -> Document:
        """Short paragraphs of workplace scenes: one- and two-person sentences."""
        r = self.rng
        paragraphs, mentions = [], []
        for _ in range(1 + int(r.expovariate(1 / 3))):
            sentences = []
            for _ in range(1 + int(r.expovariate(1 / 3))):
                roll = r.random()
                if roll < 0.55:
                    sentence, mention = self.two_person_sentence()
                elif roll < 0.9:
                    occupation = r.choice(self.occupations)
                    mention = Mention(occupation, self.gender_of(occupation))
                    sentence = self.single_sentence(mention.occupation, mention.gender)
                else:
                    sentence, mention = self.fill(r.choice(FILLER_SENTENCES)), None
                sentences.append(capitalize_first(sentence))
                mentions += [mention] if mention else []
            paragraphs.append(" ".join(sentences))
        return Document("\n\n".join(paragraphs), mentions)

    def _digest(self) -> Document:
        """News in brief: ALL-CAPS headlines, filler, named people and a quote."""
        r = self.rng
        lines, mentions = [], []
        for _ in range(1 + int(r.expovariate(1 / 3))):
            if r.random() < 0.3:
                headline = r.choice(PLAIN_HEADLINES).format(CITY=r.choice(CITIES).upper(),
                                                            STREET=self.surname().upper())
            else:
                headline, mention = self.headline()
                mentions.append(mention)
            name_gender = r.choice(GENDERS)
            name = self.full_name(name_gender)
            p = PRONOUNS[name_gender]
            body = [capitalize_first(self.fill(r.choice(FILLER_SENTENCES))),
                    f"\"We are ready,\" said {name}, who said {p['subj']} had waited {r.choice(NUMBERS)} days.",
                    f"{name} brought {p['det']} own {r.choice(THINGS)}, and the idea was {p['indep']}."]
            lines.append(headline + "\n" + " ".join(r.sample(body, r.randint(1, 3))))
        return Document("\n\n".join(lines), mentions)

    def documents(self, count: int | None = None) -> Iterator[Document]:
        """`count` documents, or an endless stream."""
        produced = 0
        while count is None or produced < count:
            yield self.document()
            produced += 1

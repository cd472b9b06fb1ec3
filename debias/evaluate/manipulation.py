"""Manipulation check: did the intervention reach the model's pronoun preferences at all?

On gender-neutral templates the model's preference is
  log P(feminine continuation | context) − log P(masculine continuation | context),
where the continuation is the pronoun and the rest of the template. A masculine→feminine rewrite
should push the mean preference up against the control run; the benchmarks above only matter
once this moves. Templates hold one placeholder naming the pronoun's role; the forms are spelled
out here and tokenized with the model's own tokenizer, so any tokenizer works.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from debias.errors import UserError
from debias.evaluate import stats
from debias.evaluate.declarations import (Better, BenchmarkDeclaration, HeadlineRole, MetricDeclaration,
                                          PairedTest)
from debias.evaluate.scorer import Request, Scorer

DECLARATION = BenchmarkDeclaration("manipulation", "Manipulation check on gender-neutral templates", "template", (
    MetricDeclaration("manipulation", "feminine_preference",
                      "mean LL(feminine continuation) - LL(masculine continuation), nats",
                      Better.NONE, headline=HeadlineRole.MANIPULATION, item_field="feminine_preference"),
    MetricDeclaration("manipulation", "share_preferring_feminine", "share of templates preferring the feminine form",
                      Better.NONE, item_field="prefers_feminine", test=PairedTest.MCNEMAR),
))

FORMS = {  # role -> (feminine, masculine)
    "subject": ("she", "he"),
    "object": ("her", "him"),
    "possessive": ("her", "his"),
    "reflexive": ("herself", "himself"),
}

DEFAULT_TEMPLATES = (
    "The person said that {subject} would be late.",
    "The student told the teacher that {subject} had finished the work.",
    "After the meeting, {subject} went home.",
    "When the doctor arrived, {subject} asked for the chart.",
    "My neighbour called and said {subject} needed help.",
    "The engineer explained why {subject} was worried.",
    "Someone knocked on the door, and then {subject} left.",
    "The nurse smiled because {subject} was happy.",
    "{subject} walked into the room and sat down.",
    "I think {subject} is right about this.",
    "I gave the book to {object}.",
    "The manager thanked {object} for the report.",
    "We met the new teacher and liked {object} at once.",
    "The committee asked {object} to speak first.",
    "Everyone waited for {object} at the station.",
    "The child ran towards {object} and laughed.",
    "The driver forgot {possessive} keys in the car.",
    "The scientist presented {possessive} results at the conference.",
    "The writer finished {possessive} novel last year.",
    "The patient lost {possessive} wallet on the train.",
    "Each employee must bring {possessive} own laptop.",
    "The lawyer called {possessive} client on Monday.",
    "The cook burned {reflexive} on the stove.",
    "The athlete pushed {reflexive} to finish the race.",
    "The artist taught {reflexive} to paint.",
)

_PLACEHOLDER = re.compile(r"\{(" + "|".join(FORMS) + r")\}")


def fill(template: str) -> tuple[str, str, str, str]:
    """(role, text before the pronoun, feminine rest, masculine rest) for one template."""
    found = list(_PLACEHOLDER.finditer(template))
    if len(found) != 1:
        raise UserError(f"eval.manipulation.templates: {template!r} must hold exactly one of "
                        f"{', '.join('{' + f + '}' for f in FORMS)}")
    match = found[0]
    role, before, after = match.group(1), template[:match.start()], template[match.end():]
    feminine, masculine = FORMS[role]
    if not before.strip():  # sentence-initial: capitalise
        feminine, masculine = feminine.capitalize(), masculine.capitalize()
    return role, before, feminine + after, masculine + after


def evaluate_manipulation(scorer: Scorer, templates=None) -> tuple[dict, dict]:
    templates = list(dict.fromkeys(templates or DEFAULT_TEMPLATES))  # the template is the item id
    filled = [fill(t) for t in templates]
    requests = []
    for _, before, feminine, masculine in filled:
        for rest in (feminine, masculine):
            if before.strip():
                r = scorer.text_request(before, rest)
                requests.append(Request((scorer.prefix_id,) + r.context, r.continuation))
            else:
                requests.append(scorer.sentence_request(rest))
    scores = scorer.score(requests, desc="manipulation check")
    preference = np.array([scores[2 * i].logprob - scores[2 * i + 1].logprob for i in range(len(filled))])

    metrics = {"templates": len(templates)}
    metrics.update(stats.mean_summary(preference, "feminine_preference"))
    share = stats.proportion_summary(preference > 0, "share_preferring_feminine")
    share.pop("n")
    metrics.update(share)
    by_role = defaultdict(list)
    for (role, *_), value in zip(filled, preference):
        by_role[role].append(value)
    metrics["by_role"] = {role: stats.mean_summary(values, "feminine_preference")
                          for role, values in sorted(by_role.items())}
    items = {template: {"feminine_preference": float(v), "prefers_feminine": float(v > 0)}
             for template, v in zip(templates, preference)}
    return metrics, items

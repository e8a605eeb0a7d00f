"""Facts in a reference answer, and whether an output states them: `fact_recall` and `answer_exact`.

Token F1 punishes a right answer for its extra words and rewards a wrong one for sharing phrasing; a user of a
knowledge assistant asks one thing: is the fact right? A *fact* is

- declared: the example's `facts:` list in the data (a phrase, or a list of acceptable phrasings of one fact); a
  phrase is present when its words occur in the output in order and next to each other;
- or derived from the reference: its numbers, names and content words — the words left after removing stopwords
  and the words of the question (echoing the question states no fact; when that leaves nothing, the question's
  words count). A derived fact is present when the word occurs anywhere in the output.

Words are compared normalised: lower case, a plural `s` (`es`, `ies`) dropped; numbers as the extraction metrics
compare them ("1,800", "1800" and "1800.00" are one number; "1st" is 1), number words as digits ("six" = 6,
"first" = 1), and negations as one word ("can't", "cannot", "not", "never" = "no"), so the polarity of a yes/no
answer is a fact.

Pure functions: no model, no torch.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

_TOKEN = re.compile(r"\d[\d,]*(?:\.\d+)?(?:st|nd|rd|th)?|[a-z]+(?:['’][a-z]+)*")
_ORDINAL = re.compile(r"(?<=\d)(st|nd|rd|th)$")
NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
                     "ninety": "90", "hundred": "100", "first": "1", "second": "2", "third": "3", "fourth": "4",
                     "fifth": "5", "sixth": "6", "seventh": "7", "eighth": "8", "ninth": "9", "tenth": "10",
                     "once": "1", "twice": "2", "half": "0.5"})
NEGATIONS = {"no", "not", "never", "cannot", "can't", "won't", "don't", "doesn't", "isn't", "aren't", "wasn't",
             "weren't", "shouldn't", "mustn't", "didn't", "haven't", "hasn't", "couldn't", "wouldn't", "nor", "none"}
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between both
but by can could did do does doing done down during each either else even ever every few for from further get gets
got had has have having he her here hers him his how i if in into is it its itself just let lets like may me might
more most must my myself of off on one only onto or other our ours out over own per please same she should so some
such than that the their theirs them then there these they this those through to too under until up upon us very
was we were what when where whether which while who whom whose why will with within would yet you your yours
yourself s t d ll m re ve
""".split()) - set(NUMBER_WORDS)  # number words are facts ("one extra day")


def _norm_word(word: str) -> str:
    word = word.replace("’", "'")
    if word in NEGATIONS or word.endswith("n't"):
        return "no"
    if word in NUMBER_WORDS:
        return NUMBER_WORDS[word]
    if word[0].isdigit():
        word = _ORDINAL.sub("", word).replace(",", "")
        try:
            return format(float(word), ".6g")  # as the extraction metrics compare numbers
        except ValueError:
            return word
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]  # matches → match, passes → pass
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """The normalised words of a text, in order (stopwords kept)."""
    return [_norm_word(w) for w in _TOKEN.findall(str(text).lower())]


def content_words(text: str) -> list[str]:
    """Numbers, names and content words of a text, normalised, each once, in order of first appearance."""
    return list(dict.fromkeys(w for w in words(text) if w not in STOPWORDS))


def derived_facts(reference: str, question: str = "") -> list[str]:
    """The reference's content words that the question does not already say (all of them when it says every one)."""
    facts = content_words(reference)
    asked = set(words(question))
    own = [w for w in facts if w not in asked]
    return own or facts


def _contains(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def _phrasings(fact: Any) -> list[str]:
    return [fact] if isinstance(fact, str) else [str(f) for f in fact]


def facts_present(output: str, reference: str, question: str = "",
                  declared: Sequence[Any] | None = None) -> tuple[int, int]:
    """(facts stated by the output, facts in the answer) for one reference."""
    out = words(output)
    if declared:
        hits = sum(any(_contains(out, words(p)) for p in _phrasings(fact)) for fact in declared)
        return hits, len(declared)
    facts = derived_facts(reference, question)
    present = set(out)
    return sum(f in present for f in facts), len(facts)


def fact_scores(output: str, references: Sequence[str], question: str = "",
                declared: Sequence[Any] | None = None) -> dict[str, float]:
    """Per example: `fact_recall`, the share of the answer's facts the output states (the best reference), and
    `answer_exact`, 1 when it states every one of them. An answer without facts (the reference is all stopwords)
    counts as stated when the output's words equal the reference's."""
    best_recall, best_all = 0.0, 0
    for ref in references:
        hits, total = facts_present(output, ref, question, declared)
        if total == 0:
            recall = float(words(output) == words(ref))
        else:
            recall = hits / total
        best_recall = max(best_recall, recall)
        best_all = max(best_all, int(recall == 1.0))
    return {"fact_recall": best_recall, "answer_exact": best_all}

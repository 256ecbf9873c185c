"""The official answer handling and metrics of the real data sets, as their evaluation code has them.

VQA v2 (GT-Vision-Lab/VQA vqaEval.py): answer normalisation, the accuracy of a prediction
against ten annotators, the soft training scores that equal it, and the answer vocabulary.
NLVR2 (lil-lab/nlvr eval/metrics.py): consistency.

    normalize_answer("Two dogs!")                     # -> "2 dogs"
    vqa_official_accuracy("yes", ["yes"] * 2 + ["no"] * 8)   # -> 0.6
"""
from __future__ import annotations

import functools
import re
from collections import Counter


# ------------------------------------------------------------------ VQA v2 answer normalisation
# The tables below are copied from the official evaluation, GT-Vision-Lab/VQA vqaEval.py,
# quirks included (the capitalised keys never match, since the text is lower-cased first;
# "somebody'd" maps to "somebodyd"), so that accuracies are comparable with published ones.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
              "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ("a", "an", "the")
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
               ",", "?", "!")
COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# Sic: "(?!<=\d)" is a look-ahead, not the look-behind "(?<!\d)" that was meant, so the pattern
# removes every period not followed by a digit ("yes." -> "yes", but "3.5" stays).
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")


def process_punctuation(text: str) -> str:
    """vqaEval.processPunctuation: delete or blank out punctuation, then strip periods."""
    out = text
    for p in PUNCTUATION:
        # Next to a space ("yes, it is") or anywhere in a number like "1,000": delete it;
        # otherwise it separates words ("black-and-white" -> "black and white").
        if p + " " in text or " " + p in text or COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # The official call is periodStrip.sub("", outText, re.UNICODE): the flag lands in the
    # `count` argument (re.UNICODE == 32), so at most 32 periods go. Reproduced on purpose.
    return PERIOD_STRIP.sub("", out, count=re.UNICODE)


def process_digit_article(text: str) -> str:
    """vqaEval.processDigitArticle: lower-case, number words to digits, drop articles, fix contractions."""
    words = [MANUAL_MAP.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def _strip(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


@functools.lru_cache(maxsize=1 << 20)   # answers repeat: VQA v2 has 6.6M annotator answers, few distinct
def normalize_answer(text: str) -> str:
    """The full official normalisation of one answer string."""
    return process_digit_article(process_punctuation(_strip(text)))


def vqa_official_accuracy(prediction: str, gt_answers: list[str]) -> float:
    """vqaEval's accuracy of one prediction against the (ten) annotators' answers, in [0, 1].

    Mean over the leave-one-annotator-out subsets of min(1, matches among the others / 3).
    Quirk kept from the official code: when all ground-truth answers are identical, nothing
    is normalised, only stripped, so "Yes" scores 0 against ten "yes".
    """
    if not gt_answers:
        raise ValueError("vqa_official_accuracy needs at least one ground-truth answer")
    pred, gts = _strip(prediction), [_strip(a) for a in gt_answers]
    if len(set(gts)) > 1:
        pred, gts = normalize_answer(pred), [normalize_answer(a) for a in gts]
    accs = [min(1.0, sum(g == pred for g in gts[:i] + gts[i + 1:]) / 3) for i in range(len(gts))]
    return sum(accs) / len(accs)


def soft_score(count: int) -> float:
    """BUTD/ViLT training target for an answer given by `count` = k of ten annotators: 0, .3, .6,
    .9, then 1. It equals the official accuracy of predicting that answer,
    (k min(1, (k-1)/3) + (10-k) min(1, k/3)) / 10, as a test checks."""
    return (0.0, 0.3, 0.6, 0.9)[count] if count < 4 else 1.0  # a table: 0.3 * 3 != 0.9 in floating point


def build_answer_vocab(multiple_choice_answers, min_count: int = 9) -> list[str]:
    """Normalised answers seen at least `min_count` times, in first-occurrence order (ViLT).

    Pass the training (and, as ViLT does, validation) `multiple_choice_answer`s; with the
    default threshold the official train+val files give the usual 3,129 answers.
    """
    normalised = [normalize_answer(a) for a in multiple_choice_answers]
    counts = Counter(normalised)
    return [a for a in dict.fromkeys(normalised) if counts[a] >= min_count]  # dict: ordered set


# ------------------------------------------------------------------ NLVR2
def nlvr2_consistency(identifiers, correct) -> float:
    """Fraction of sentences right on every image pair they were written for (eval/metrics.py).

    Examples are grouped by identifier without its pair_id part: split-set_id-sentence_id.
    """
    groups: dict[str, bool] = {}
    for identifier, ok in zip(identifiers, correct, strict=True):
        parts = identifier.split("-")
        key = "-".join([parts[0], parts[1], parts[-1]])
        groups[key] = groups.get(key, True) and bool(ok)
    if not groups:
        raise ValueError("nlvr2_consistency needs at least one example")
    return sum(groups.values()) / len(groups)

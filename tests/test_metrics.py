"""Tests of metrics.py: VQA answer normalisation and accuracy, the answer vocabulary, NLVR2 consistency.

The expected values are worked out by hand from the official code (vqaEval.py, nlvr2
eval/metrics.py), so a change of behaviour shows up here.
"""
import pytest

from metrics import (CONTRACTIONS, build_answer_vocab, nlvr2_consistency, normalize_answer, process_punctuation,
                     soft_score, vqa_official_accuracy)


@pytest.mark.parametrize("raw, expected", [
    ("Two", "2"), ("none", "0"), ("a dog", "dog"), ("The  Red Car", "red car"), ("dont", "don't"),
    ("yes.", "yes"), ("3.5", "3.5"), ("black-and-white", "black and white"),
    ("left, right", "left right"),  # ", " next to a space: deleted, not blanked
    ("1,000", "1000"),              # digit,digit: every punctuation mark is deleted
    ("1,000-2", "10002"),           # ... even the hyphen, since the comma rule is about the whole text
    ("  cat\n", "cat"),
])
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_official_tables():
    assert len(CONTRACTIONS) >= 110 and CONTRACTIONS["whats"] == "what's"
    assert process_punctuation("a.b.c?") == "abc "  # "?" with no space next to it becomes a space


def test_accuracy_is_the_leave_one_out_average():
    gts = ["other"] * 10
    for k, expected in enumerate([0.0, 0.3, 0.6, 0.9, 1.0, 1.0]):
        answers = ["dog"] * k + gts[k:]
        assert vqa_official_accuracy("dog", answers) == pytest.approx(expected)
        assert soft_score(k) == pytest.approx(expected)
        # the closed form: each of the ten leave-one-out subsets, averaged
        assert expected == pytest.approx((k * min(1, (k - 1) / 3) + (10 - k) * min(1, k / 3)) / 10)
    assert soft_score(10) == 1.0


def test_accuracy_normalises_unless_all_answers_agree():
    mixed = ["2"] * 9 + ["3"]
    assert vqa_official_accuracy("Two", mixed) == pytest.approx(1.0)
    assert vqa_official_accuracy("the 2.", mixed) == pytest.approx(1.0)
    same = ["yes"] * 10
    assert vqa_official_accuracy("Yes", same) == 0.0    # the quirk: not normalised
    assert vqa_official_accuracy(" yes\t", same) == 1.0  # only stripped


def test_answer_vocab_threshold_and_order():
    answers = ["Two", "cat", "2", "dog", "a cat", "dog", "bird"]
    assert build_answer_vocab(answers, min_count=2) == ["2", "cat", "dog"]  # first-occurrence order
    assert build_answer_vocab(answers, min_count=1) == ["2", "cat", "dog", "bird"]
    assert build_answer_vocab(answers) == []  # default 9


def test_nlvr2_consistency():
    ids = ["dev-1-0-0", "dev-1-1-0", "dev-1-2-0", "dev-1-0-1", "dev-1-1-1", "dev-2-0-0"]
    correct = [True, True, True, True, False, True]  # sentence dev-1-?-1 fails once
    assert nlvr2_consistency(ids, correct) == pytest.approx(2 / 3)

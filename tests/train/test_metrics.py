"""Metrics against hand-computed values."""

import math

import numpy as np
import pytest

from lorakit.train.metrics import (
    classification_metrics,
    confusion_matrix,
    generation_metrics,
    nist,
    transpose_references,
)


def test_three_class_example_by_hand():
    # confusion (true x pred): [[1,0,0],[0,1,1],[0,0,1]]
    # F1 per class: 1, 2/3, 2/3 -> 7/9. MCC (Gorodkin): c=3, s=4, t=(1,2,1), p=(1,1,2):
    # (3*4 - (1+2+2)) / sqrt((16-6)*(16-6)) = 7/10
    m = classification_metrics([0, 1, 2, 2], [0, 1, 1, 2], num_labels=3)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx(7 / 9)
    assert m["mcc"] == pytest.approx(0.7)


def test_binary_mcc_equals_the_classic_formula():
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 1]
    preds = [1, 1, 0, 1, 0, 0, 1, 0, 0, 1]
    tp, tn, fp, fn = 4, 4, 1, 1
    classic = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    m = classification_metrics(preds, labels, 2)
    assert m["mcc"] == pytest.approx(classic) == pytest.approx(0.6)
    assert m["macro_f1"] == pytest.approx(0.8)


def test_extremes():
    assert classification_metrics([0, 1, 2], [0, 1, 2], 3) == {"accuracy": 1.0, "macro_f1": 1.0, "mcc": 1.0}
    inverted = classification_metrics([1, 0, 1, 0], [0, 1, 0, 1], 2)
    assert inverted["accuracy"] == 0.0 and inverted["mcc"] == pytest.approx(-1.0)
    constant = classification_metrics([1, 1, 1, 1], [0, 1, 0, 1], 2)  # undefined MCC -> 0
    assert constant["mcc"] == 0.0 and constant["accuracy"] == 0.5
    assert constant["macro_f1"] == pytest.approx((0 + 2 / 3) / 2)


def test_classes_absent_from_labels_and_preds_do_not_count_in_macro_f1():
    m = classification_metrics([0, 1, 1], [0, 1, 0], num_labels=5)
    # class 0: 2*1/(2+1)=2/3, class 1: 2*1/(1+2)=2/3; classes 2-4 never occur
    assert m["macro_f1"] == pytest.approx(2 / 3)


def test_confusion_matrix_and_input_checks():
    assert confusion_matrix(np.array([0, 2, 2]), [0, 1, 2], 3).tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="equally long"):
        classification_metrics([0, 1], [0], 2)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.1"):
        classification_metrics([0, 1], [0, 2], 2)
    with pytest.raises(ValueError, match="integers"):
        classification_metrics([0.0, 1.0], [0, 1], 2)
    with pytest.raises(ValueError, match="no predictions"):
        classification_metrics([], [], 2)


def test_identical_hypothesis_scores_perfectly():
    m = generation_metrics(["the cat sat on the mat"], [["the cat sat on the mat"]])
    assert m["bleu"] == pytest.approx(100.0)
    assert m["chrf"] == pytest.approx(100.0)
    assert m["rouge_l"] == pytest.approx(100.0)
    # NIST by hand, reference "the cat sat on the mat" (6 words, "the" twice):
    # unigram info log2(6/2) for "the" (x2), log2(6) for the other 4 -> precision (2 log2 3 + 4 log2 6) / 6;
    # bigram info log2(count(w1)/count(w1 w2)): 1 for "the cat" and "the mat", 0 otherwise -> 2/5;
    # higher orders carry 0 information; brevity penalty 1.
    expected = (2 * math.log2(3) + 4 * math.log2(6)) / 6 + 2 / 5
    assert m["nist"] == pytest.approx(expected)


def test_references_are_used_together_and_per_input():
    hyps = ["the cat sat on the mat", "a dog barked at the postman"]
    # the second input has two references; its hypothesis matches the second one exactly
    refs = [["the cat sat on the mat"], ["an unrelated sentence about birds", "a dog barked at the postman"]]
    assert generation_metrics(hyps, refs)["bleu"] == pytest.approx(100.0)
    # swapping which input the references belong to must ruin the score
    swapped = generation_metrics(hyps, [refs[1], refs[0]])
    assert swapped["bleu"] < 20 and swapped["rouge_l"] < 50


def test_transpose_references_pads_with_none():
    assert transpose_references([["a"], ["b", "c", "d"], ["e", "f"]]) == [
        ["a", "b", "e"],
        [None, "c", "f"],
        [None, "d", None],
    ]


def test_rouge_l_takes_best_reference_then_averages():
    # "the cat sat" vs "the cat sat on": P = 1, R = 3/4, F = 6/7; the unrelated reference scores 0
    m = generation_metrics(["the cat sat", "hello world"], [["x y", "the cat sat on"], ["hello world"]])
    assert m["rouge_l"] == pytest.approx((6 / 7 + 1) / 2 * 100)


def test_nist_handles_hypotheses_shorter_than_five_tokens():
    # nltk alone raises ZeroDivisionError here. By hand: unigrams a, b carry log2(2/1) = 1 each ->
    # precision 1; the bigram "a b" carries log2(1/1) = 0; brevity penalty 1.
    assert nist([["a", "b"]], [[["a", "b"]]]) == pytest.approx(1.0)
    assert nist([[]], [[["a", "b"]]]) == 0.0
    assert generation_metrics([""], [["a b"]])["nist"] == 0.0


def test_generation_input_checks():
    with pytest.raises(ValueError, match="1 hypotheses but 2 reference lists"):
        generation_metrics(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="non-empty list of strings"):
        generation_metrics(["a"], [[]])
    with pytest.raises(ValueError, match="non-empty list of strings"):
        generation_metrics(["a"], ["a"])  # a bare string is not a list of references
    with pytest.raises(ValueError, match="no hypotheses"):
        generation_metrics([], [])

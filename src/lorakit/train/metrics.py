"""Evaluation metrics as pure functions: predictions in, a dict of floats out.

Classification (fractions in [0, 1], MCC in [-1, 1]): accuracy, macro-F1 and the multi-class Matthews
correlation coefficient (Gorodkin 2004, "R_K"), computed from a confusion matrix with numpy.

Generation (the E2E NLG metrics, with all references of an input used together):
- BLEU and chrF: sacrebleu's corpus scores (0-100, default 13a tokenization, cased).
- ROUGE-L: rouge-score's F-measure (its default tokenizer lowercases and keeps alphanumerics; no
  stemming), the best reference per hypothesis, averaged over the corpus, ×100.
- NIST: nltk's ``corpus_nist`` (n = 5) on 13a-tokenized text. Pure Python, needs no nltk data.
- METEOR is left out on purpose: nltk's implementation needs the WordNet corpus, which must be
  downloaded and cannot be here; a METEOR computed without synonyms would not be comparable.
sacrebleu, rouge-score and nltk are imported inside ``generation_metrics`` (the ``train`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lorakit.errors import LorakitError

NIST_ORDER = 5  # highest n-gram order, as in mteval and the E2E challenge


def confusion_matrix(preds: Sequence[int], labels: Sequence[int], num_labels: int) -> np.ndarray:
    """``C[true, pred]`` counts for integer classes ``0..num_labels-1``."""
    p, t = np.asarray(preds), np.asarray(labels)
    if p.shape != t.shape or p.ndim != 1:
        raise LorakitError(f"preds and labels must be 1-D and equally long, got {p.shape} and {t.shape}")
    if p.size == 0:
        raise LorakitError("no predictions to score")
    if num_labels < 1:
        raise LorakitError(f"num_labels must be >= 1, got {num_labels}")
    for name, values in (("preds", p), ("labels", t)):
        if not np.issubdtype(values.dtype, np.integer):
            raise LorakitError(f"{name} must be integers, got dtype {values.dtype}")
        if values.min() < 0 or values.max() >= num_labels:
            raise LorakitError(f"{name} must lie in 0..{num_labels - 1}, got {values.min()}..{values.max()}")
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (t, p), 1)
    return matrix


def classification_metrics(preds: Sequence[int], labels: Sequence[int], num_labels: int) -> dict[str, float]:
    """Accuracy, macro-F1 and multi-class MCC of integer predictions against integer labels.

    Macro-F1 averages per-class F1 over the classes that occur in ``labels`` or ``preds`` (as
    scikit-learn does by default), so a class absent from a small eval set does not count as F1 = 0.
    MCC is 0 when undefined (all labels or all predictions in one class), as in scikit-learn.
    """
    c = confusion_matrix(preds, labels, num_labels).astype(np.float64)
    n = c.sum()
    tp = np.diag(c)
    true_per_class, pred_per_class = c.sum(axis=1), c.sum(axis=0)
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (true count + predicted count)
    support = true_per_class + pred_per_class
    present = support > 0
    f1 = 2 * tp[present] / support[present]
    # Gorodkin's R_K: (c·s − Σ p_k t_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²))
    correct = tp.sum()
    cov_pt = correct * n - (pred_per_class * true_per_class).sum()
    cov_pp = n * n - (pred_per_class**2).sum()
    cov_tt = n * n - (true_per_class**2).sum()
    denominator = np.sqrt(cov_pp * cov_tt)
    mcc = float(cov_pt / denominator) if denominator > 0 else 0.0
    return {"accuracy": float(correct / n), "macro_f1": float(f1.mean()), "mcc": mcc}


def _check_generation_inputs(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(hypotheses) != len(references):
        raise LorakitError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        raise LorakitError("no hypotheses to score")
    for i, (hyp, refs) in enumerate(zip(hypotheses, references, strict=True)):
        if not isinstance(hyp, str):
            raise LorakitError(f"hypothesis {i} must be a string, got {type(hyp).__name__}")
        if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise LorakitError(f"references[{i}] must be a non-empty list of strings, got {refs!r}")


def transpose_references(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-input reference lists → sacrebleu's reference streams, padded with None.

    sacrebleu wants ``streams[j][i]`` = j-th reference of input i, every stream as long as the corpus;
    None (not "") marks a missing reference, so inputs with fewer references are not penalised by an
    empty one.
    """
    width = max(len(refs) for refs in references)
    return [[refs[j] if j < len(refs) else None for refs in references] for j in range(width)]


def nist(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> float:
    """NIST over tokenized text, with orders no hypothesis reaches counted as precision 0.

    nltk divides by the number of hypothesis n-grams of each order and so fails when no hypothesis has
    ``NIST_ORDER`` tokens; lowering n to the longest hypothesis drops exactly the orders whose
    precision is 0/0 (n-gram information weights do not depend on n).
    """
    from nltk.translate.nist_score import corpus_nist

    order = min(NIST_ORDER, max((len(h) for h in hypotheses), default=0))
    if order == 0:
        return 0.0
    return float(
        corpus_nist([list(map(list, refs)) for refs in references], [list(h) for h in hypotheses], n=order)
    )


def generation_metrics(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """BLEU, NIST, ROUGE-L and chrF of ``hypotheses[i]`` against all of ``references[i]``."""
    _check_generation_inputs(hypotheses, references)
    import sacrebleu
    from rouge_score import rouge_scorer
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    streams = transpose_references(references)
    bleu = sacrebleu.corpus_bleu(list(hypotheses), streams).score
    chrf = sacrebleu.corpus_chrf(list(hypotheses), streams).score
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge_l = np.mean(
        [
            scorer.score_multi(list(refs), hyp)["rougeL"].fmeasure
            for hyp, refs in zip(hypotheses, references, strict=True)
        ]
    )
    tokenize = Tokenizer13a()  # the same tokenization BLEU uses, so NIST and BLEU see the same words
    nist_score = nist(
        [tokenize(h).split() for h in hypotheses],
        [[tokenize(r).split() for r in refs] for refs in references],
    )
    return {"bleu": float(bleu), "nist": nist_score, "rouge_l": float(rouge_l * 100), "chrf": float(chrf)}

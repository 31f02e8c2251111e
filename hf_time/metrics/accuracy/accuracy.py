"""Accuracy as a local `evaluate` metric module, shipped with hf_time so it loads offline.

``evaluate.load("accuracy")`` would fetch the script from the Hub; this copy is loaded by path
(``evaluate.load(str(Path(__file__).parent))``) and needs neither the network nor scikit-learn.
"""

import datasets
import evaluate

_DESCRIPTION = "Fraction of predictions equal to the references (optionally weighted)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
    normalize (bool): return the fraction (True, default) or the count of correct predictions.
    sample_weight (list of float): optional per-example weights.
Returns:
    accuracy (float): the (weighted) fraction, or count, of correct predictions.
Examples:
    >>> metric = evaluate.load("path/to/hf_time/metrics/accuracy")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
"""
_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        weights = [1.0] * len(predictions) if sample_weight is None else [float(w) for w in sample_weight]
        correct = sum(w for p, r, w in zip(predictions, references, weights) if p == r)
        if not normalize:
            return {"accuracy": float(correct)}
        total = sum(weights)
        return {"accuracy": float(correct / total) if total else float("nan")}

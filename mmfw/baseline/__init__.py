"""``mmfw-baseline run=<run folder>``: the linear model a run has to beat, on exactly the run's splits.

The run's datamodule is rebuilt from the run folder's saved config (the same rows, the same train/val/test split,
the same train-fitted tabular statistics) and a scikit-learn linear model is fitted on the train split, per
modality and on all modalities together. Features per modality kind:

    text     TF-IDF of word 1-2-grams + character 2-5-grams of the raw text (from the manifest; a datamodule that
             cannot give raw text falls back to a bag of its token ids and 1-2-grams of them)
    tabular  the standardised numeric columns, their missing flags, one-hot categorical columns
    image    pixels average-pooled to at most ``image_side`` x ``image_side`` per channel, standardised
    audio    mean and standard deviation over time of each log-mel band, standardised

Each modality's features are scaled to a mean squared row norm of 1 on train, so that no block dominates the shared
penalty. A sample whose modality is missing (mask bit False) gets zeros there; the all-modalities model also sees the
mask bits. Models: logistic regression (multiclass: multinomial; binary), one-vs-rest logistic regression
(multilabel), ridge (regression). The regularisation ``C`` (ridge: ``alpha = 1 / C``) is chosen on the val split
by the run's ``monitor.metric``; test metrics are computed with the model's own torchmetrics
(:meth:`mmfw.contracts.TaskSpec.metrics`).

Writes ``<run>/baseline/metrics.json`` and merges ``baseline/test/<metric>`` (all modalities) and
``baseline[<modality>]/test/<metric>`` into ``<run>/test_metrics.json`` and ``run.json`` ``test_metrics`` (so
``mmfw-compare --metric baseline/test/acc`` compares them across runs).
"""

from mmfw.baseline.features import FeatureSettings
from mmfw.baseline.run import BASELINE_DIR, main, merge_test_metrics, metric_name, run_baseline

__all__ = ["BASELINE_DIR", "FeatureSettings", "main", "merge_test_metrics", "metric_name", "run_baseline"]

"""Robustness evaluation: metric curves under per-modality corruption and under missing modalities.

``mmfw-eval run=<run folder> robustness=default`` writes ``<run>/robustness/robustness.{json,png}``. Corruptions
(one per file; Hydra ``_target_`` points at them from ``conf/robustness/*.yaml``):

- :class:`GaussianImageNoise` — ``x + σ s ε`` on image tensors.
- :class:`AudioSNRNoise` — white noise at an SNR added to the waveform, log-mel recomputed.
- :class:`CharacterDrop` — characters deleted from raw text, re-tokenized.
- :class:`TabularValueDrop` — table cells set missing.
"""

from mmfw.robustness.audio_noise import AudioSNRNoise
from mmfw.robustness.curves import auc, effective_robustness, modality_subsets, relative_robustness
from mmfw.robustness.image_noise import GaussianImageNoise
from mmfw.robustness.report import plot_report, print_report, save_report
from mmfw.robustness.sweep import RobustnessConfigError, evaluate_robustness, plan_corruptions
from mmfw.robustness.tabular_drop import TabularValueDrop
from mmfw.robustness.text_drop import CharacterDrop

__all__ = [
    "AudioSNRNoise",
    "CharacterDrop",
    "GaussianImageNoise",
    "RobustnessConfigError",
    "TabularValueDrop",
    "auc",
    "effective_robustness",
    "evaluate_robustness",
    "modality_subsets",
    "plan_corruptions",
    "plot_report",
    "print_report",
    "relative_robustness",
    "save_report",
]

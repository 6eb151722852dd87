"""Bring your own data: a datamodule over a manifest (CSV, TSV, JSONL or Parquet), one row per sample.

``columns`` maps modality names to manifest columns, e.g.
``{photo: {kind: image, column: img_path}, voice: {kind: audio, column: wav}, caption: {kind: text, column:
caption}, meta: {kind: tabular, numeric: [age], categorical: [color]}}``. Samples (the batch contract)::

    image    (C, H, W) float in [0, 1]      C = 1 (image_mode L) or 3 (RGB)
    audio    (1, n_mels, num_frames) float  log-mel of the recording resampled to sample_rate
    text     (L,) long                      ids of the configured tokenizer, right-padded with its pad id;
                                            L = max_text_len, or for ngrams the split's longest text
    tabular  {"numeric": (N,) float, "numeric_missing": (N,) bool, "categorical": (C,) long}
    mask     (M,) bool                      False where the cell is empty / NaN (or the file missing, with
                                            missing_file=mask); that modality's tensor is then zeros
    target   () long (multiclass) | () float (binary) | (K,) float (multilabel) | () or (K,) float (regression)

The package: :mod:`.reader` (the file → rows, cell helpers), :mod:`.targets` (task kind, target parsing, labels),
:mod:`.splits` (split column, seeded split, k-fold), :mod:`.codecs` (one codec per modality kind: decode, training
statistics, assembly, encoder inputs, re-decoding under a corruption), :mod:`.build` (rows → split tensors) and
:mod:`.datamodule` (settings, disk cache, the datamodule contract).
"""

from mmfw.data.manifest.datamodule import ManifestDataModule
from mmfw.data.manifest.reader import ManifestError, read_manifest
from mmfw.data.manifest.splits import fold_split, seeded_split

__all__ = ["ManifestDataModule", "ManifestError", "fold_split", "read_manifest", "seeded_split"]

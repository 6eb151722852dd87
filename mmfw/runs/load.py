"""A trained run as a model plus its preprocessing, for notebooks, services and ``mmfw-predict``.

    run = mmfw.load_run("logs/train/runs/2026-11-29_10-00-00_ab12cd")
    predictions = run.predict("new_rows.csv")        # a table: row, prediction, p_<class> ...
    predictions.save("out/")                          # out/predictions.csv (+ skipped_samples.json)

The model is the run's best checkpoint (loaded as data only, :func:`mmfw.runs.run_folder.load_checkpoint`) in eval
mode; the preprocessing is the run's datamodule rebuilt from its saved config: the training split's statistics
(tokenizer, tabular standardisation, label names) come from the run folder's ``preprocessing.pt``, so the training
data may be gone; a run folder written before that file existed rebuilds them from the datamodule's disk cache or
the training manifest, as ``mmfw-eval`` does. New rows are decoded by those codecs at the run's settings
(image size, audio features), so a sample is what the model saw in training.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, open_dict

from mmfw.contracts import TaskSpec
from mmfw.data.base import MultimodalDataModule, TensorDictDataset
from mmfw.data.manifest.new_rows import NewRows
from mmfw.evaluate import load_run_config
from mmfw.module import MultimodalModule
from mmfw.runs import run_folder
from mmfw.threads import apply_thread_policy
from mmfw.train import build

log = logging.getLogger(__name__)

PREDICTIONS_CSV = "predictions.csv"
SKIPPED_JSON = "skipped_samples.json"


@dataclass
class Predictions:
    """A prediction per decoded row (``table``) and the rows that could not be read (``skipped``).

    ``table`` columns: ``row`` (1-based data row of ``file``, the header not counted), the id column if asked for,
    ``masked`` (the modalities missing in that row, ``|``-joined), then the objective's
    :meth:`~mmfw.objectives.base.Objective.prediction_columns`: ``prediction`` and ``p_<class>`` per class, or the
    regression value(s) (:meth:`TaskSpec.prediction_columns`); ``reward`` for a reward model (``objective=preference``).
    """

    file: Path
    table: pd.DataFrame
    skipped: list[dict[str, Any]]

    def save(self, out_dir: str | Path) -> Path:
        """``out_dir/predictions.csv``, and ``out_dir/skipped_samples.json`` when rows were skipped; returns the CSV."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / PREDICTIONS_CSV
        self.table.to_csv(path, index=False)
        skipped = out_dir / SKIPPED_JSON
        skipped.unlink(missing_ok=True)  # a file from an earlier prediction would claim rows of this one
        if self.skipped:
            skipped.write_text(json.dumps(self.skipped, indent=2, default=str) + "\n")
            log.warning("%d row(s) of %s could not be read and were skipped; see %s", len(self.skipped), self.file,
                        skipped)  # fmt: skip
        return path


@dataclass
class LoadedRun:
    """A run's model (eval mode, best checkpoint) and preprocessing (its datamodule, set up)."""

    run_dir: Path
    config: DictConfig
    checkpoint: Path
    model: MultimodalModule
    datamodule: MultimodalDataModule

    @property
    def task(self) -> TaskSpec:
        return self.model.task

    @property
    def modalities(self) -> list[str]:
        """The model's modalities, in the order of the mask's columns."""
        return list(self.model.modalities)

    def decode(self, data: str | Path, *, on_bad_sample: str | None = None) -> NewRows:
        """``data`` (a manifest with the run's columns; no target or split needed) through the run's preprocessing;
        ``on_bad_sample`` (``error`` | ``skip``) None: the run's setting."""
        return self.datamodule.decode_new_rows(data, on_bad_sample=on_bad_sample)

    def logits(
        self, dataset: TensorDictDataset, *, accelerator: str = "cpu", batch_size: int | None = None
    ) -> torch.Tensor:
        """The model's logits ``(N, num_outputs)`` on ``dataset``, in order, at the run's precision."""
        if batch_size is not None:
            self.datamodule.batch_size = batch_size
        loader = self.datamodule.loader(dataset, shuffle=False, pin_memory=False)
        trainer = pl.Trainer(
            accelerator=accelerator, devices=1, precision=self.config.trainer.precision, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        outputs = trainer.predict(self.model, dataloaders=loader)
        return torch.cat([o.float().cpu() for o in outputs])

    def require_head(self, command: str) -> None:
        """Refuse a run whose objective trains encoders only (``objective=contrastive``): it has no fusion and head,
        so nothing to predict or export."""
        if self.model.objective.head_outputs is None:
            raise ValueError(
                f"{command}: {self.run_dir} was trained with objective={type(self.model.objective).__name__.lower()}, "
                "which aligns the encoders and has no fusion or head to predict with. Use its encoders in a "
                "classifier (`mmfw-train encoder.<modality>.init_from=<this run>`), or `mmfw-eval run=<this run>` "
                "for its retrieval metrics."
            )

    def predict(
        self,
        data: str | Path,
        *,
        on_bad_sample: str | None = None,
        id_column: str | None = None,
        accelerator: str = "cpu",
        batch_size: int | None = None,
    ) -> Predictions:
        """Predictions for every readable row of ``data`` (see :class:`Predictions`); ``id_column`` is copied from the
        file into the table."""
        self.require_head("mmfw-predict")
        rows = self.decode(data, on_bad_sample=on_bad_sample)
        if id_column is not None and not any(id_column in r for r in rows.records):
            raise ValueError(f"id_column={id_column!r} is not a column of {rows.file}")
        logits = self.logits(rows.dataset, accelerator=accelerator, batch_size=batch_size)
        table: dict[str, list[Any]] = {"row": rows.rows}
        if id_column is not None:
            table[id_column] = [r.get(id_column) for r in rows.records]
        mask = rows.dataset.mask
        table["masked"] = [
            "|".join(m for j, m in enumerate(self.modalities) if not mask[i, j]) for i in range(len(mask))
        ]
        target = self.config.datamodule.get("target")
        names = [target] if isinstance(target, str) else list(target or [])
        label_delimiter = str(self.config.datamodule.get("label_delimiter", "|"))
        table |= self.model.objective.prediction_columns(logits, target_names=names, label_delimiter=label_delimiter)
        return Predictions(rows.file, pd.DataFrame(table), rows.skipped)


def load_run(path: str | Path, *, ckpt: str | Path = "best") -> LoadedRun:
    """The run in folder ``path``: its ``ckpt`` (``best``: the one run.json records, else last.ckpt with a warning)
    loaded as data only into the model its config builds, and its datamodule set up with the training statistics.

    The run's preprocessing is read from its ``preprocessing.pt``; the training data is read only for its splits
    (``datamodule.dataset``), or, in a run folder without that file, to rebuild the preprocessing as ``mmfw-eval``
    does: then it must still be where the run's ``resolved_config.yaml`` says.
    """
    run_dir = run_folder.check_run_folder(str(path))
    cfg = load_run_config(run_dir)
    checkpoint, note = run_folder.best_checkpoint(run_dir) if ckpt == "best" else (Path(ckpt), None)
    if note:
        log.warning(note)
    state = run_folder.load_checkpoint(checkpoint)  # before any data is built: a refused file fails fast
    with open_dict(cfg):
        cfg.feature_cache = False  # the model runs its frozen encoders itself: new rows have no cached features
        if cfg.get("objective") is not None and cfg.objective.get("pairs") is not None:
            cfg.objective.pairs = None  # a reward model scores single samples: the sample datamodule, not its pairs
        if (run_dir / run_folder.PREPROCESSING).is_file():
            cfg.datamodule.preprocessing = str(run_dir / run_folder.PREPROCESSING)
    datamodule, model = build(cfg, stage="test")
    model.load_state_dict(state["state_dict"])
    model.eval()
    return LoadedRun(run_dir=run_dir, config=cfg, checkpoint=checkpoint, model=model, datamodule=datamodule)


def predict_run(
    run: str | Path,
    data: str | Path,
    *,
    out: str | Path | None = None,
    ckpt: str = "best",
    on_bad_sample: str | None = None,
    id_column: str | None = None,
    accelerator: str = "auto",
    batch_size: int | None = None,
) -> Path:
    """``mmfw-predict``: predict ``data`` with the run and write ``predictions.csv`` into ``out`` (None:
    ``<run>/predictions/<data file name>/``); returns its path."""
    loaded = load_run(run, ckpt=ckpt)
    apply_thread_policy(loaded.config.get("threads", "auto"), {"accelerator": accelerator, "devices": 1})
    predictions = loaded.predict(data, on_bad_sample=on_bad_sample, id_column=id_column, accelerator=accelerator,
                                 batch_size=batch_size)  # fmt: skip
    out_dir = Path(out) if out is not None else loaded.run_dir / "predictions" / Path(data).stem
    path = predictions.save(out_dir)
    log.info("%d prediction(s) of %s written to %s (%d row(s) skipped)", len(predictions.table), predictions.file,
             path, len(predictions.skipped))  # fmt: skip
    return path

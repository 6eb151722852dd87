"""``mmfw-predict run=<run folder> data=<manifest file>``: the run's model on new rows, written to predictions.csv
(:func:`mmfw.runs.load.predict_run`). Nothing heavy is imported before Hydra has read the command line."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mmfw.runs.config import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    from mmfw.runs.load import predict_run

    path = predict_run(cfg.run, cfg.data, out=cfg.out, ckpt=cfg.ckpt, on_bad_sample=cfg.on_bad_sample,
                       id_column=cfg.id_column, accelerator=cfg.accelerator, batch_size=cfg.batch_size)  # fmt: skip
    print(f"predictions: {path}")


if __name__ == "__main__":
    main()

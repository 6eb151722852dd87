"""``mmfw-export run=<run folder> format=onnx|torchscript``: the run's fused model with its mask input, checked
against PyTorch on real samples (:func:`mmfw.runs.export.export_run`). Nothing heavy is imported before Hydra has
read the command line."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mmfw.runs.config import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    from mmfw.runs.export import export_run

    path = export_run(cfg.run, format=cfg.format, out=cfg.out, samples=cfg.samples, tolerance=cfg.tolerance)
    print(f"exported: {path} (inputs and check: {path.parent / 'export.json'})")


if __name__ == "__main__":
    main()

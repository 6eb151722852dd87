"""Command-line values are checked against the annotation of the constructor argument they set."""

from __future__ import annotations

import pytest
from conftest import compose_train

from mmfw.runs.config import ConfigValueError, check_value_types


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["trainer.max_epochs=abc"], "trainer.max_epochs must be an integer or null"),
        (["datamodule.batch_size=abc"], "datamodule.batch_size must be an integer"),
        (["model.optimizer.lr=fast"], "model.optimizer.lr must be a number"),
        (["model.modality_dropout=high"], "model.modality_dropout must be a number"),
        (["callbacks.early_stopping.patience=x"], "callbacks.early_stopping.patience must be an integer"),
        (["trainer.precision=64x"], "trainer.precision must be one of"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_override_and_the_type(tmp_path, overrides, named):
    cfg = compose_train(overrides, tmp_path)
    with pytest.raises(ConfigValueError, match="must be") as error:
        check_value_types(cfg, overrides)
    assert named in str(error.value) and f"`{overrides[0]}`" in str(error.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.max_epochs=3"],
        ["trainer.precision=bf16-mixed"],
        ["trainer.gradient_clip_val=0.5", "trainer.devices=1", "trainer.deterministic=true"],
        ["model.optimizer.lr=0.1", "model.optimizer.weight_decay=0"],
        ["model.modality_dropout=0.2", "datamodule.batch_size=8"],
        ["trainer=ddp_cpu", "trainer.strategy.timeout.minutes=2"],
        ["fusion=late", "modalities=[image]", "seed=3"],
    ],
)
def test_values_of_the_right_type_pass(tmp_path, overrides):
    check_value_types(compose_train(overrides, tmp_path), overrides)


def test_wrong_type_on_the_command_line_fails_before_training(tmp_path):
    from cli_helpers import mmfw, output
    from conftest import TINY_AVDIGITS

    result = mmfw("mmfw-train", "trainer.max_epochs=abc", *TINY_AVDIGITS, root=tmp_path)
    assert result.returncode != 0
    assert "`trainer.max_epochs=abc`: trainer.max_epochs must be an integer" in output(result)

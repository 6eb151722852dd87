"""The datamodule contract (mmfw.data.base): every datamodule answers the same questions, without probing."""

import pytest
import torch

from mmfw.data.avdigits import AVDigitsDataModule
from mmfw.data.base import TensorDictDataset, WrappedDataModule
from mmfw.feature_cache import FeatureCacheDataModule
from mmfw.objectives.pairs import PairDataModule


def test_avdigits_offers_the_whole_contract_before_setup(tmp_path):
    dm = AVDigitsDataModule(raw_dir=str(tmp_path), cache_dir=str(tmp_path), modalities=["audio", "image"])
    assert dm.skipped == [] and dm.truncated == {} and dm.fold is None
    assert dm.modality_kinds == {"audio": "audio", "image": "image"}
    assert dm.encoder_inputs == {"audio": {"in_chans": 1}, "image": {"in_chans": 1}}
    assert dm.task.num_outputs == 10 and dm.raw_texts("test", "audio") is None
    dm.write_splits(tmp_path / "splits.csv")  # no source rows: nothing to write
    assert not (tmp_path / "splits.csv").exists()
    with pytest.raises(ValueError, match="decodes only the audio modality"):
        dm.corrupted_dataset("test", "image", lambda w, **_: w)


def test_tensor_dict_dataset_serves_views_and_replaces_one_modality():
    stored = torch.arange(8, dtype=torch.uint8).reshape(2, 1, 2, 2)
    data = TensorDictDataset(
        {"image": stored, "meta": {"numeric": torch.zeros(2, 3)}},
        torch.ones(2, 2, dtype=torch.bool),
        torch.tensor([0, 1]),
        views={"image": lambda x: x.float() / 255},
    )
    assert data[1]["image"].dtype == torch.float32 and data[1]["meta"]["numeric"].shape == (3,)
    gone = data.replace("meta", {"numeric": torch.ones(2, 3)}, present=torch.tensor([True, False]))
    assert gone.mask.tolist() == [[True, True], [True, False]] and data.mask.all()
    with pytest.raises(ValueError, match=r"mask must be \(N, M\)"):
        TensorDictDataset({"image": stored}, torch.ones(2, 2, dtype=torch.bool), torch.tensor([0, 1]))


def test_a_wrapped_datamodule_answers_the_contract_with_the_inner_ones(tmp_path):
    """The feature cache and the pairs wrap the run's datamodule: both answer the contract from one base."""
    inner = AVDigitsDataModule(raw_dir=str(tmp_path), cache_dir=str(tmp_path), modalities=["audio", "image"])
    inner.skipped.append({"file": "x.wav", "reason": "unreadable"})
    inner.fold = {"fold": 1, "folds": 4, "val_speaker": "george"}
    wrapped = WrappedDataModule(inner)
    assert wrapped.inner is inner and wrapped.modalities == ["audio", "image"] and wrapped.task == inner.task
    assert wrapped.encoder_inputs == inner.encoder_inputs and wrapped.modality_kinds == inner.modality_kinds
    assert wrapped.skipped == inner.skipped and wrapped.truncated == {} and wrapped.fold == inner.fold
    assert wrapped.raw_texts("test", "audio") is None and wrapped.state_dict() == inner.state_dict()
    assert issubclass(FeatureCacheDataModule, WrappedDataModule) and issubclass(PairDataModule, WrappedDataModule)

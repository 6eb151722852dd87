"""LSTM/GRU encoder: shapes, the module docstring's pooling formulas, padding never read, every config trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_train

from mmfw.data.text import ByteTokenizer, encode_padded
from mmfw.encoders.recurrent import RecurrentEncoder
from mmfw.train import CONFIG_DIR, build

TEXTS = ["a red square", "", "the quick brown fox jumps over the lazy dog"]
LOG_PAD = float(np.log(1e-6))  # what the manifest datamodule pads short recordings with


def byte_ids(max_len: int) -> torch.Tensor:
    return torch.from_numpy(encode_padded(ByteTokenizer(), TEXTS, max_len))


def text_encoder(**kwargs) -> RecurrentEncoder:
    torch.manual_seed(0)
    return RecurrentEncoder(vocab_size=259, pad_id=ByteTokenizer.pad_id, embed_dim=8, hidden_dim=6, **kwargs).eval()


def direct(enc: RecurrentEncoder, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The unpadded sequence (1, n, input) through the bare RNN: (mean of outputs, [h→_{n-1}; h←_0])."""
    out, _ = enc.rnn(steps)  # (1, n, out_dim)
    half = out.shape[-1] // enc.directions
    last = torch.cat([out[0, -1, :half], out[0, 0, half:]]) if enc.directions == 2 else out[0, -1]
    return out[0].mean(dim=0), last


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_text_pooling_is_the_formula_over_valid_tokens_only(cell, bidirectional, num_layers):
    enc = text_encoder(cell=cell, bidirectional=bidirectional, num_layers=num_layers)
    ids = byte_ids(48)
    with torch.no_grad():
        mean = enc(ids)
        enc.pooling = "last"
        last = enc(ids)
        assert mean.shape == last.shape == (3, enc.out_dim) and enc.out_dim == 6 * (2 if bidirectional else 1)
        for b in range(3):
            n = int((ids[b] != enc.pad_id).sum())
            want_mean, want_last = direct(enc, enc.embed(ids[b : b + 1, :n]))
            torch.testing.assert_close(mean[b], want_mean, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(last[b], want_last, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(enc(byte_ids(96)), last)  # more padding: the same
        assert torch.equal(enc(torch.zeros(2, 16, dtype=torch.long)), torch.zeros(2, enc.out_dim))  # missing text
        enc.pooling = "mean"
        assert torch.equal(enc(torch.zeros(2, 16, dtype=torch.long)), torch.zeros(2, enc.out_dim))


def test_text_tokens_zero_on_padding_and_gradients_reach_every_weight():
    enc = text_encoder(cell="lstm", returns_tokens=True, num_layers=2).train()
    ids = byte_ids(20)
    tokens = enc(ids)
    assert tokens.shape == (3, 20, 12) and (tokens[ids == enc.pad_id] == 0).all()
    assert (tokens[ids != enc.pad_id].abs().sum(dim=-1) > 0).all()
    tokens.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_audio_frames_as_a_sequence_and_padding_frames_ignored(cell):
    torch.manual_seed(0)
    enc = RecurrentEncoder(cell=cell, n_mels=5, in_chans=1, hidden_dim=4, pad_value=LOG_PAD).eval()
    spec = torch.randn(3, 1, 5, 12)
    spec[0, :, :, 7:] = LOG_PAD  # a short recording, padded as the manifest datamodule does
    spec[2] = LOG_PAD  # nothing at all
    with torch.no_grad():
        out = enc(spec)
        assert out.shape == (3, 8) and torch.isfinite(out).all()
        want, _ = direct(enc, spec[0:1, 0, :, :7].transpose(1, 2))  # 7 frames (1, T, n_mels)
        torch.testing.assert_close(out[0], want, atol=1e-6, rtol=1e-5)
        want, _ = direct(enc, spec[1:2, 0].transpose(1, 2))
        torch.testing.assert_close(out[1], want, atol=1e-6, rtol=1e-5)
        assert torch.equal(out[2], torch.zeros(8))
        enc.pad_value = None  # every frame valid: the padded frames are now read
        assert not torch.allclose(enc(spec)[0], out[0])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_audio_without_padding_is_the_formula_over_every_frame(cell, num_layers):
    """pad_value None (AV-digits, the default audio encoder): the unpacked run equals the formula on each row."""
    torch.manual_seed(0)
    spec = torch.randn(3, 1, 5, 12)
    for pooling in ("mean", "last"):
        enc = RecurrentEncoder(cell=cell, n_mels=5, hidden_dim=4, num_layers=num_layers, pooling=pooling).eval()
        with torch.no_grad():
            out = enc(spec)
            for row in range(3):
                mean, last = direct(enc, spec[row : row + 1, 0].transpose(1, 2))
                torch.testing.assert_close(out[row], mean if pooling == "mean" else last, atol=1e-6, rtol=1e-5)


def test_audio_without_padding_exports():
    """torch.export (the first step of mmfw-export's ONNX path) traces the default audio encoder."""
    enc = RecurrentEncoder(cell="gru", n_mels=5, hidden_dim=4).eval()
    spec = torch.randn(2, 1, 5, 9)
    exported = torch.export.export(enc, (spec,))
    torch.testing.assert_close(exported.module()(spec), enc(spec))


def test_audio_tokens_are_frames():
    enc = RecurrentEncoder(n_mels=5, in_chans=2, hidden_dim=4, bidirectional=False, returns_tokens=True)
    assert enc(torch.randn(2, 2, 5, 9)).shape == (2, 9, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, r"either token ids \(vocab_size.*or spectrogram frames \(n_mels"),
        ({"vocab_size": 10, "n_mels": 4}, r"either token ids"),
        ({"vocab_size": 10, "cell": "rnn"}, r"cell must be 'lstm' or 'gru'"),
        ({"vocab_size": 10, "pooling": "max"}, r"pooling must be 'mean' or 'last'"),
    ],
)
def test_bad_arguments_name_what_to_set(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RecurrentEncoder(**kwargs)


def test_wrong_input_kind_is_named():
    with pytest.raises(ValueError, match=r"reads token ids"):
        RecurrentEncoder(vocab_size=10)(torch.randn(2, 1, 4, 5))
    with pytest.raises(ValueError, match=r"reads spectrograms"):
        RecurrentEncoder(n_mels=4)(torch.zeros(2, 5, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- configs
def text_manifest(root: Path) -> Path:
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma"]
    rows = [
        {"caption": f"the {words[i % 3]} one {'x' * int(rng.integers(0, 9))}", "label": words[i % 3],
         "split": ["train", "train", "val", "test"][i % 4]}
        for i in range(64)
    ]  # fmt: skip
    rows[5]["caption"] = ""  # a missing text
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def fit_a_few_steps(cfg, tmp_path: Path) -> pl.LightningModule:
    datamodule, model = build(cfg)
    trainer = pl.Trainer(max_steps=3, limit_val_batches=1, logger=False, enable_checkpointing=False,
                         log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                         default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    assert torch.isfinite(trainer.callback_metrics["train/loss_step"])
    assert not [n for n, p in model.named_parameters() if p.grad is None], "parameters the loss never reaches"
    return model


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_text_configs_build_and_train(name, tmp_path):
    assert (Path(CONFIG_DIR) / "encoder" / "text" / f"{name}.yaml").is_file()
    cfg = compose_train(
        ["datamodule=manifest", f"datamodule.manifest={text_manifest(tmp_path / 'data')}", "datamodule.target=label",
         "+datamodule.columns={caption: {kind: text, column: caption}}", "datamodule.text_tokenizer=bytes",
         "datamodule.max_text_len=24", "datamodule.batch_size=8", "modalities=[caption]",
         f"+encoder/text@encoder.caption={name}", "monitor.metric=val/acc", f"paths.cache_dir={tmp_path / 'cache'}"],
        tmp_path,
    )  # fmt: skip
    model = fit_a_few_steps(cfg, tmp_path)
    assert model.encoders["caption"].rnn.mode == name.upper()

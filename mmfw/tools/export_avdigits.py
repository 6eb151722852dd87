"""Write AV-digits out as ordinary files plus a CSV manifest, to run the manifest datamodule on real data.

    python -m mmfw.tools.export_avdigits --out data/avdigits_manifest --train 3000 --val 600 --test 1000

One row per AV-digits pair (the data set's own train/val/test splits and pairing), files under ``--out``:

==========  ===========================================================================================================
column      content
==========  ===========================================================================================================
image       ``images/<split>/<i>.png``, 28x28 grey: the AV-digits image (MNIST minus its leading PCA components),
            stored as ``128 + 32 x`` clipped to 0..255 (the residual in units of its training std, ±4 std kept)
audio       ``audio/<split>/<i>.wav``, 16-bit mono at the data set's sample rate, ``(num_frames - 1) * hop_length``
            samples: the recording (RMS 0.1) centred in the window, with the data set's white noise at ``snr_db``
            — exactly the waveform the AV-digits spectrogram is computed from; ``--clean`` leaves the noise out
digit       the label, 0-9
parity      ``even`` or ``odd``
speaker     the FSDD speaker of the recording (validation and test speakers never occur in training)
duration_s  the length of the original recording in seconds, before it is centred in the window
transcript  a synthetic, noisy transcript of the spoken digit (an ASR stand-in): the digit's word, replaced by a
            random other digit word with probability ``--transcript-error``, then each letter replaced by a random
            letter with probability ``--typo-rate``. It is derived from the label: a weak text modality, not data.
split       ``train``, ``val`` or ``test``
==========  ===========================================================================================================
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from PIL import Image

from mmfw.data.avdigits import SPLITS, AVDigitsDataModule

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))
_NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)\.wav$")


def image_to_uint8(image: np.ndarray) -> np.ndarray:
    """A standardised residual image ``(28, 28)`` float → uint8 ``128 + 32 x`` clipped to 0..255."""
    return np.clip(np.round(128.0 + 32.0 * image), 0, 255).astype(np.uint8)


def noisy_transcript(digit: int, rng: np.random.Generator, *, error: float, typo_rate: float) -> str:
    """The digit's word, swapped for another digit word with probability ``error``; letters mistyped at ``typo_rate``
    (each replaced by a uniformly drawn letter)."""
    word = digit
    if rng.random() < error:
        word = int(rng.choice([d for d in range(10) if d != digit]))
    letters = np.array(list(DIGIT_WORDS[word]))
    typos = rng.random(len(letters)) < typo_rate
    letters[typos] = rng.choice(_LETTERS, size=int(typos.sum()))
    return "".join(letters)


def export(
    out: Path,
    *,
    raw_dir: str,
    cache_dir: str,
    train_size: int,
    val_size: int,
    test_size: int,
    seed: int,
    snr_db: float,
    clean: bool,
    transcript_error: float,
    typo_rate: float,
) -> pd.DataFrame:
    """Build AV-digits (cached), write its pairs as files under ``out`` and ``out/manifest.csv``; returns the rows."""
    datamodule = AVDigitsDataModule(
        raw_dir=raw_dir, cache_dir=cache_dir, modalities=["image", "audio"], train_size=train_size,
        val_size=val_size, test_size=test_size, seed=seed, snr_db=snr_db,
    )  # fmt: skip
    datamodule.prepare_data()
    datamodule.setup(None)
    rate = datamodule.build_params["sample_rate"]
    recordings = Path(raw_dir) / "fsdd" / "recordings"  # the raw layout (mmfw.data.download)
    durations = {}
    text_rng = np.random.default_rng([seed, 7])
    rows, clipped, samples = [], 0, 0
    for split in SPLITS:
        data = datamodule.datasets[split]
        waves, names = datamodule.pair_waves(split, noisy=not clean)
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "audio" / split).mkdir(parents=True, exist_ok=True)
        for i, (wave, name) in enumerate(zip(waves, names, strict=True)):
            digit = int(data.target[i])
            image_path, audio_path = f"images/{split}/{i:05d}.png", f"audio/{split}/{i:05d}.wav"
            Image.fromarray(image_to_uint8(data.inputs["image"][i, 0].numpy()), mode="L").save(out / image_path)
            clipped, samples = clipped + int(np.sum(np.abs(wave) > 1.0)), samples + len(wave)
            sf.write(out / audio_path, np.clip(wave, -1.0, 1.0), rate, subtype="PCM_16")
            if name not in durations:
                durations[name] = sf.info(recordings / name).duration
            rows.append({
                "image": image_path, "audio": audio_path, "digit": digit,
                "parity": "even" if digit % 2 == 0 else "odd", "speaker": _NAME.match(name).group(2),
                "duration_s": round(durations[name], 4),
                "transcript": noisy_transcript(digit, text_rng, error=transcript_error, typo_rate=typo_rate),
                "split": split,
            })  # fmt: skip
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "manifest.csv", index=False)
    if clipped:
        print(f"note: {clipped} of {samples} audio samples ({clipped / samples:.5%}) exceeded [-1, 1] and were clipped "
              "to fit 16-bit PCM", file=sys.stderr)  # fmt: skip
    return frame


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mmfw.tools.export_avdigits", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="output folder (manifest.csv, images/, audio/)")
    parser.add_argument("--train", type=int, default=3000, help="training pairs")
    parser.add_argument("--val", type=int, default=600, help="validation pairs")
    parser.add_argument("--test", type=int, default=1000, help="test pairs")
    parser.add_argument("--seed", type=int, default=1234, help="AV-digits construction seed (and the transcripts')")
    parser.add_argument("--snr-db", type=float, default=10.0, help="AV-digits noise level of the recordings")
    parser.add_argument("--clean", action="store_true", help="write the recordings without the white noise")
    parser.add_argument("--transcript-error", type=float, default=0.35, help="share of transcripts with a wrong word")
    parser.add_argument("--typo-rate", type=float, default=0.1, help="share of transcript letters mistyped")
    parser.add_argument("--raw-dir", default=os.environ.get("MMFW_AVDIGITS_RAW", "data/avdigits/raw"),
                        help="AV-digits raw folder (env MMFW_AVDIGITS_RAW)")  # fmt: skip
    parser.add_argument("--cache-dir", default=str(Path(os.environ.get("MMFW_CACHE_DIR", "data/cache")) / "avdigits"),
                        help="processed AV-digits cache (env MMFW_CACHE_DIR)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="write into a folder that already has a manifest")
    args = parser.parse_args(argv)
    if (args.out / "manifest.csv").exists() and not args.overwrite:
        parser.error(f"{args.out / 'manifest.csv'} exists: pass --overwrite or choose another --out")
    frame = export(
        args.out, raw_dir=args.raw_dir, cache_dir=args.cache_dir, train_size=args.train, val_size=args.val,
        test_size=args.test, seed=args.seed, snr_db=args.snr_db, clean=args.clean,
        transcript_error=args.transcript_error, typo_rate=args.typo_rate,
    )  # fmt: skip
    counts = frame["split"].value_counts().to_dict()
    print(f"wrote {len(frame)} rows ({counts}) to {args.out / 'manifest.csv'}")


if __name__ == "__main__":
    main()

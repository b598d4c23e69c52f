"""Local stand-ins for BigQuery and Cloud Storage, for the `prod` tests.

The emulators (bqemulator, gcp-storage-emulator) run from their own venv (`make emulators`,
`tools/emulators/`), each in a child process on free ports. What they lack is worked around here,
never in the production code:

- dagster-gcp's `BigQueryResource` builds `bigquery.Client(project, location)` only, which cannot
  point at an emulator or go without credentials: `EmulatorBigQueryResource` builds the client
  with the emulator's endpoint and anonymous credentials.
- bqemulator binds no query parameters inside a multi-statement script (BigQuery does):
  `EmulatorBigQueryClient` writes them into such scripts as literals.
- The GCS client follows `STORAGE_EMULATOR_HOST` by itself (anonymous credentials included).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from dagster_gcp import BigQueryResource
from google.cloud import bigquery

from newsrec_assets.settings import REPO_ROOT

EMULATORS_DIR = REPO_ROOT / "tools" / "emulators"
EMULATOR_PYTHON = EMULATORS_DIR / ".venv" / "bin" / "python"
START_TIMEOUT_SECONDS = 60


class EmulatorUnavailable(RuntimeError):
    """An emulator could not start; the prod tests skip with this reason."""


@dataclass
class EmulatorProcess:
    process: subprocess.Popen
    endpoint: dict[str, str]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def running_emulator(launcher: str, log_dir: Path, *arguments: str) -> Iterator[EmulatorProcess]:
    """Start `tools/emulators/<launcher>` and wait for the JSON line naming its endpoint."""
    if not EMULATOR_PYTHON.exists():
        raise EmulatorUnavailable(f"{EMULATOR_PYTHON} is missing: run `make emulators`")
    log = log_dir / f"{Path(launcher).stem}.log"
    with open(log, "wb") as errors:
        process = subprocess.Popen(
            [str(EMULATOR_PYTHON), str(EMULATORS_DIR / launcher), *arguments],
            stdout=subprocess.PIPE,
            stderr=errors,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    emulator = EmulatorProcess(process, {}, log)
    try:
        emulator.endpoint = _endpoint_line(process, log)
        yield emulator
    finally:
        emulator.stop()


def _endpoint_line(process: subprocess.Popen, log: Path) -> dict[str, str]:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise EmulatorUnavailable(f"emulator exited with {process.returncode}: {tail}")
            continue
        if line.startswith(b"{"):
            return json.loads(line)
    raise EmulatorUnavailable(f"no endpoint within {START_TIMEOUT_SECONDS} s (log: {log})")


def _literal(parameter) -> str:
    if isinstance(parameter, bigquery.ArrayQueryParameter):
        return "[" + ", ".join(_scalar_literal(parameter.array_type, v) for v in parameter.values) + "]"
    return _scalar_literal(parameter.type_, parameter.value)


def _scalar_literal(kind: str, value) -> str:
    if value is None:
        return "null"
    if kind == "TIMESTAMP":
        moment = value.astimezone(UTC) if isinstance(value, datetime) else value
        return f"timestamp '{moment.isoformat()}'"
    if kind == "DATE":
        return f"date '{value.isoformat() if isinstance(value, date) else value}'"
    if kind in ("INT64", "FLOAT64", "BOOL"):
        return str(value).lower() if kind == "BOOL" else str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


class EmulatorBigQueryClient(bigquery.Client):
    """A BigQuery client for bqemulator: script parameters are written in as literals."""

    def query(self, query, job_config=None, *args, **kwargs):
        parameters = job_config.query_parameters if job_config is not None else []
        if parameters and query.lstrip().lower().startswith("begin"):
            for parameter in parameters:
                query = re.sub(rf"@{parameter.name}\b", lambda _, p=parameter: _literal(p), query)
            job_config = bigquery.QueryJobConfig()
        return super().query(query, job_config, *args, **kwargs)


class EmulatorBigQueryResource(BigQueryResource):
    """dagster-gcp's BigQueryResource, with the client pointed at a local bqemulator."""

    api_endpoint: str

    @contextmanager
    def get_client(self) -> Iterator[bigquery.Client]:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        yield EmulatorBigQueryClient(
            project=self.project,
            location=self.location,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.api_endpoint),
        )


def upload_folder(folder: Path, bucket: str, prefix: str, project: str) -> int:
    """Upload every `.jsonl` file under `folder` to `gs://bucket/prefix/<relative path>`; returns
    how many (the GCS client follows STORAGE_EMULATOR_HOST)."""
    from google.cloud import storage

    target = storage.Client(project=project).bucket(bucket)
    paths = sorted(folder.rglob("*.jsonl"))
    for path in paths:
        target.blob(f"{prefix}/{path.relative_to(folder).as_posix()}").upload_from_filename(str(path))
    return len(paths)

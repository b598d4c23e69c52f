"""Start bqemulator offline: DuckDB's spatial extension (GEOGRAPHY) is skipped instead of downloaded.

Run with the emulators' own interpreter (`tools/emulators/.venv/bin/python`). Binds free ports and
prints one JSON line, `{"rest": "http://127.0.0.1:PORT", "grpc": "127.0.0.1:PORT"}`, once both
servers accept connections; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from bqemulator.config import LogLevel, Settings
from bqemulator.server import EmulatorServer
from bqemulator.storage.engine import DuckDBEngine


def _skip_spatial(self: DuckDBEngine) -> None:
    """The spatial extension downloads at start-up; newsrec uses no GEOGRAPHY."""


async def _serve(project: str) -> None:
    DuckDBEngine._load_spatial = _skip_spatial
    server = EmulatorServer(
        Settings(
            rest_port=0,
            grpc_port=0,
            default_project_id=project,
            log_level=LogLevel.WARNING,
            enable_format_extensions=False,  # avro/parquet extensions download too; NDJSON needs none
        )
    )
    await server.start()
    print(json.dumps({"rest": server.rest_url, "grpc": server.grpc_endpoint}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default="newsrec-test")
    asyncio.run(_serve(parser.parse_args(argv).project))
    return 0


if __name__ == "__main__":
    sys.exit(main())

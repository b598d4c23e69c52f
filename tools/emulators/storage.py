"""Start gcp-storage-emulator in memory on a free port.

Run with the emulators' own interpreter (`tools/emulators/.venv/bin/python`). Prints one JSON line,
`{"host": "http://127.0.0.1:PORT"}` (the value for `STORAGE_EMULATOR_HOST`), once it accepts
connections; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import json
import signal
import sys
import threading

from gcp_storage_emulator.server import create_server


def main() -> int:
    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    host, port = server._api._httpd.server_address[:2]  # port 0: the one the OS picked
    print(json.dumps({"host": f"http://{host}:{port}"}), flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

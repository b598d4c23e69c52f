"""A DuckDB warehouse connection waits for another process's lock instead of failing."""

import subprocess
import sys
import time

import pytest

from newsrec_assets.resources.warehouse import DuckDBWarehouse

HOLD = """
import duckdb, pathlib, sys, time
con = duckdb.connect(sys.argv[1])
con.execute("create table if not exists t as select 1 as x")
pathlib.Path(sys.argv[2]).write_text("held")
while not pathlib.Path(sys.argv[3]).exists():
    time.sleep(0.05)
time.sleep(1.0)  # still held when the waiting connection first tries
con.close()
"""


@pytest.mark.parametrize("read_only", [True, False])
def test_a_connection_waits_for_another_process_to_release_the_file(tmp_path, read_only):
    path, held, release = tmp_path / "w.duckdb", tmp_path / "held", tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(held), str(release)])
    try:
        deadline = time.monotonic() + 60
        while not held.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        impatient = DuckDBWarehouse(path, read_only=read_only)
        impatient.lock_wait_seconds = 0
        with pytest.raises(Exception, match="(?i)lock"):
            impatient.connect()
        # the holder lets go a second after this signal: the patient connection has to wait
        patient = DuckDBWarehouse(path, read_only=read_only)
        release.touch()
        with patient.connect() as con:
            assert con.execute("select x from t").fetchone() == (1,)
    finally:
        release.touch()
        holder.wait(timeout=60)

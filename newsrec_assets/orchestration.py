"""Running the asset graph from the command line: the Dagster instance and one-off materialisations."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from newsrec_assets.settings import DAGSTER_INSTANCE_TEMPLATES, REPO_ROOT, get_environment, local_paths


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME (default `$NEWSREC_HOME/dagster_home`) with this environment's instance settings
    (`dagster.yaml`, or `deploy/dagster.yaml` in production).

    The copy follows the settings: an instance made before a settings change (run monitoring,
    retries) gets them too.
    """
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(local_paths().dagster_home)))
    home.mkdir(parents=True, exist_ok=True)
    wanted = instance_settings(home)
    settings = home / "dagster.yaml"
    if not settings.exists() or settings.read_text() != wanted:
        settings.write_text(wanted)
    return home


# Where a local instance keeps its event log: one SQLite file.
EVENT_LOG_FOLDER = Path("history", "events")
# The event log of a local instance made before EVENT_LOG_FOLDER: one SQLite file per run.
PER_RUN_EVENT_INDEX = Path("history", "runs", "index.db")


def instance_settings(home: Path) -> str:
    """The instance settings (`dagster.yaml` text) of this environment and DAGSTER_HOME `home`.

    Production: `deploy/dagster.yaml` (PostgreSQL). Local: `deploy/dagster.local.yaml`, with the
    event log in one SQLite file (Dagster's `ConsolidatedSqliteEventLogStorage`), or with
    `NEWSREC_DAGSTER_STORAGE=postgres` the production instance's PostgreSQL storage (the same
    `DAGSTER_PG_*` variables) in place of the SQLite files.

    Why one file: Dagster's default SQLite event log gives every run its own file (~120 KB of
    schema before its first event) and writes each asset event twice, in the run's file and an
    index; at the demo's ~770 runs a day that was over a third of the instance's growth
    (docs/scaling.md, "The Dagster instance"). Dagster's docstring calls the one-file storage
    "intended for test cases only"; its cost is that every writer of the instance takes turns on
    the one file, which at a few runs writing a few events a second did not show (no lock error in
    the demo's measured hour). Dagster runs its event-log storage test suite on it, and the crash
    tests (`tests/faults`) run on it. A home made before it keeps its per-run files, so that its
    run and asset history stays readable.
    """
    environment = get_environment()
    template = DAGSTER_INSTANCE_TEMPLATES[environment].read_text()
    storage = os.getenv("NEWSREC_DAGSTER_STORAGE", "sqlite")
    if storage not in ("sqlite", "postgres"):
        raise ValueError(f"NEWSREC_DAGSTER_STORAGE must be 'sqlite' or 'postgres', not {storage!r}")
    if environment == "prod" or (storage == "sqlite" and (home / PER_RUN_EVENT_INDEX).exists()):
        return template
    import yaml

    if storage == "sqlite":
        block = {
            "event_log_storage": {
                "module": "dagster._core.storage.event_log",
                "class": "ConsolidatedSqliteEventLogStorage",
                "config": {"base_dir": str(home / EVENT_LOG_FOLDER)},
            }
        }
        return (
            f"{template}\n# The event log in one SQLite file (see orchestration.instance_settings).\n"
            + yaml.safe_dump(block, sort_keys=False)
        )
    production = yaml.safe_load(DAGSTER_INSTANCE_TEMPLATES["prod"].read_text())
    return (
        f"{template}\n# NEWSREC_DAGSTER_STORAGE=postgres: the production instance's storage.\n"
        + yaml.safe_dump({"storage": production["storage"]}, sort_keys=False)
    )


def materialize_selection(selection: str = "*", run_config=None):
    """Materialise the selected assets in this process, recorded in the instance the UI shows."""
    import dagster as dg

    ensure_dagster_home()
    from newsrec_assets.definitions import defs
    from newsrec_assets.run_launcher import RUN_WORKER_HOST_TAG, this_host

    with dg.DagsterInstance.get() as instance:
        return materialize_in_phases(
            defs,
            dg.AssetSelection.from_string(selection),
            resources=defs.resources,
            instance=instance,
            # This process is the run's worker: run monitoring may check it here.
            tags={"newsrec/trigger": "cli", RUN_WORKER_HOST_TAG: this_host()},
            run_config=run_config,
        )


class PhasedResult:
    """The runs of `materialize_in_phases`, read like one run's result."""

    def __init__(self, results: list) -> None:
        self.results = results

    @property
    def success(self) -> bool:
        return all(result.success for result in self.results)

    @property
    def run_id(self) -> str:
        return self.results[0].run_id

    @property
    def all_events(self) -> list:
        return [event for result in self.results for event in result.all_events]

    def get_asset_check_evaluations(self) -> list:
        return [check for result in self.results for check in result.get_asset_check_evaluations()]

    def asset_materializations_for_node(self, node_name: str) -> list:
        return [m for result in self.results for m in result.asset_materializations_for_node(node_name)]


def materialize_in_phases(defs, selection, resources, instance, tags=None, run_config=None) -> PhasedResult:
    """Materialise a selection that may hold partitioned assets (the batch layer's user shards).

    One run cannot mix partitioned and unpartitioned assets, so, as the automation does it: the
    selected assets upstream of the partitioned ones in one run (with `run_config`), then each
    partition in its own run, then what depends on them. Stops at the first failed run.
    """
    import dagster as dg

    graph = defs.resolve_asset_graph()
    keys = set(selection.resolve(graph))
    partitioned = {key for key in keys if graph.get(key).partitions_def is not None}
    after = keys & set(dg.AssetSelection.assets(*partitioned).downstream().resolve(graph)) - partitioned
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    runs: list[tuple[set, str | None, object]] = [(keys - partitioned - after, None, run_config)]
    for partition in sorted(
        {p for key in partitioned for p in graph.get(key).partitions_def.get_partition_keys()}
    ):
        runs.append((partitioned, partition, None))
    runs.append((after, None, None))
    results = []
    for selected, partition, config in runs:
        if not selected:
            continue
        result = dg.materialize(
            assets,
            selection=list(selected),
            partition_key=partition,
            resources=resources,
            instance=instance,
            raise_on_error=False,
            tags=tags,
            run_config=config,
        )
        results.append(result)
        if not result.success:
            break
    return PhasedResult(results)


def warehouse_summary() -> dict[str, int]:
    """Counts that show the spine worked (landed, stored, duplicates, quarantined, view events),
    from the warehouse of this environment's definitions."""
    import dagster as dg

    from newsrec_assets.definitions import defs

    # build_resources resolves the resource's EnvVars, as a run would.
    with dg.build_resources({"warehouse": defs.resources["warehouse"]}) as resources:
        return resources.warehouse.get(read_only=True).summary()


def service_commands(ui_port: int, api_port: int) -> dict[str, list[str]]:
    """`dagster dev` (UI and daemon: sensors, automation) and the API, on loopback ports."""
    bin_dir = Path(sys.executable).parent
    return {
        "dagster": [
            str(bin_dir / "dagster"),
            "dev",
            "-w",
            str(REPO_ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(ui_port),
        ],
        "api": [
            str(bin_dir / "uvicorn"),
            "serving.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(api_port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
    }


def start_services(
    commands: dict[str, list[str]], extra_env: dict[str, str], log_dir: Path | None = None
) -> dict[str, subprocess.Popen]:
    """Start each command in its own session (Ctrl-C reaches only the caller, which stops them).

    The venv's bin/ goes first on PATH, so the children find dagster, dbt and uvicorn. With
    `log_dir`, each child's output goes to `<log_dir>/<name>.log` instead of the terminal.
    """
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **extra_env}
    children = {}
    for name, command in commands.items():
        output = open(log_dir / f"{name}.log", "w") if log_dir else None  # noqa: SIM115 - lives with the child
        children[name] = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,
        )
    return children


def stop_services(children: dict[str, subprocess.Popen], grace_seconds: float = 20, say=print) -> None:
    """Interrupt the children in reverse start order, wait, and kill what is left after the grace."""
    for name, child in reversed(children.items()):
        if child.poll() is None:
            say(f"stopping {name}")
            os.killpg(child.pid, signal.SIGINT)
    deadline = time.monotonic() + grace_seconds
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()

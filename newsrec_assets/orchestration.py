"""Running the asset graph from the command line: the Dagster instance and one-off materialisations."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from newsrec_assets.settings import REPO_ROOT, local_paths

INSTANCE_TEMPLATE = REPO_ROOT / "dagster.yaml"


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME (default `$NEWSREC_HOME/dagster_home`) with the project's instance settings."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(local_paths().dagster_home)))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(INSTANCE_TEMPLATE, home / "dagster.yaml")
    return home


def materialize_selection(selection: str = "*"):
    """Materialise the selected assets in this process, recorded in the instance the UI shows."""
    import dagster as dg

    ensure_dagster_home()
    from newsrec_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = list(dg.AssetSelection.from_string(selection).resolve(graph))
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    with dg.DagsterInstance.get() as instance:
        return dg.materialize(
            assets,
            selection=keys,
            resources=defs.resources,
            instance=instance,
            raise_on_error=False,
            tags={"newsrec/trigger": "cli"},
        )

"""The ground-truth folder: what really happened, and the state live mode continues from.

Files:
- `click_model.json`: click-model parameters, taxonomy, id formats, simulation settings.
- `world.npz`: user interests and activity, article subcategory/category/quality/publication/removal.
- `views.npz`, `views_live_<run>.npz`: every true view event (user, article, time, list, number)
  of the history and of each live run.
- `simulator_state.json` + `simulator_state.npz`: binlog position, counters and app memory.
- `summary.json`: counts of the last run.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from newsrec_assets.domain.events import ViewEvent
from newsrec_assets.domain.simulator.app import AppState
from newsrec_assets.domain.simulator.click_model import CLICK_MODEL_FILE, WORLD_FILE, ClickModelParams
from newsrec_assets.domain.simulator.emitter import VIEWS, Binlog, ChangeLog, ViewRows
from newsrec_assets.domain.simulator.vocabulary import Taxonomy
from newsrec_assets.domain.simulator.world import (
    Articles,
    Users,
    article_id,
    impression_id,
    ms_to_datetime,
    user_id,
)

VIEWS_FILE = "views.npz"
STATE_FILE = "simulator_state.json"
STATE_ARRAYS_FILE = "simulator_state.npz"
SUMMARY_FILE = "summary.json"
TRUE_VIEW_COLUMNS = ("user", "article", "viewed_ms", "impression_number", "view_number")


def _write_atomically(path: Path, content: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(content)
    os.replace(temporary, path)


def write_json(path: Path, document: dict[str, Any]) -> None:
    _write_atomically(path, (json.dumps(document, indent=2) + "\n").encode())


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    _write_atomically(path, buffer.getvalue())


def save_world(
    folder: Path,
    taxonomy: Taxonomy,
    params: ClickModelParams,
    users: Users,
    articles: Articles,
    settings: dict[str, Any],
) -> None:
    """Write the click model description and the world arrays that `ClickOracle.load` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        folder / CLICK_MODEL_FILE,
        {
            "description": "p(click) = sigmoid(bias + interest_weight * interest + category_weight * "
            "category_interest + freshness_weight * 0.5 ** (age_hours / freshness_half_life_hours) + "
            "position_weight / log2(position + 2) + article_quality); interest terms are relative to the "
            "user's top subcategory/category. Index i of a user/article array is id u/a{i+1:06d}.",
            "params": params.to_json(),
            "categories": list(taxonomy.categories),
            "subcategories": list(taxonomy.subcategories),
            "subcategory_category": taxonomy.subcategory_category.tolist(),
            "settings": settings,
        },
    )
    save_articles(folder, taxonomy, users, articles)


def save_articles(folder: Path, taxonomy: Taxonomy, users: Users, articles: Articles) -> None:
    """Rewrite `world.npz` (live mode calls this whenever it publishes an article)."""
    write_npz(
        folder / WORLD_FILE,
        {
            "user_interest": users.interest,
            "user_sessions_per_day": users.sessions_per_day,
            "subcategory_category": taxonomy.subcategory_category,
            "article_subcategory": articles.subcategory,
            "article_category": taxonomy.subcategory_category[articles.subcategory],
            "article_quality": articles.quality,
            "article_published_ms": articles.published_ms,
            "article_removed_ms": articles.removed_ms,
        },
    )


def load_world(folder: Path) -> tuple[Taxonomy, ClickModelParams, Users, Articles, dict[str, Any]]:
    description = json.loads((folder / CLICK_MODEL_FILE).read_text())
    taxonomy = Taxonomy(
        tuple(description["categories"]),
        tuple(description["subcategories"]),
        np.asarray(description["subcategory_category"], dtype=np.int64),
    )
    with np.load(folder / WORLD_FILE) as world:
        users = Users(world["user_interest"], world["user_sessions_per_day"])
        articles = Articles(
            world["article_subcategory"],
            world["article_quality"],
            world["article_published_ms"],
            world["article_removed_ms"],
        )
    return taxonomy, ClickModelParams(**description["params"]), users, articles, description["settings"]


def true_view_arrays(log: ChangeLog) -> dict[str, np.ndarray]:
    """The view events of a change log, in commit order, with their number within their row."""
    order = log.index[log.table == VIEWS]  # the views' own indices, in binlog order
    views = log.views
    return {
        "user": views.user[order],
        "article": views.article[order],
        "viewed_ms": views.viewed_ms[order],
        "impression_number": views.impression_number[order],
        "view_number": log.view_count[order],
    }


def save_true_views(folder: Path, arrays: dict[str, np.ndarray], live_run: int = 0) -> None:
    """Write view events: `views.npz` for the history, `views_live_<run>.npz` for each live run."""
    write_npz(folder / (VIEWS_FILE if live_run == 0 else f"views_live_{live_run:04d}.npz"), arrays)


def load_true_view_events(folder: str | Path) -> list[ViewEvent]:
    """All true view events (history and live runs), as `reconstruct_view_events` returns them."""
    folder = Path(folder)
    events: list[ViewEvent] = []
    for path in [folder / VIEWS_FILE, *sorted(folder.glob("views_live_*.npz"))]:
        with np.load(path) as views:
            columns = (views[name].tolist() for name in TRUE_VIEW_COLUMNS)
            events.extend(
                ViewEvent(
                    user_id=user_id(user),
                    article_id=article_id(article),
                    view_number=view_number,
                    viewed_at=ms_to_datetime(viewed_ms),
                    impression_id=impression_id(number) if number >= 0 else None,
                )
                for user, article, viewed_ms, number, view_number in zip(*columns, strict=True)
            )
    return sorted(events)


@dataclass
class SimulatorState:
    """Everything live mode needs to continue the same database and the same app."""

    seed: int
    clock_ms: int  # events up to here have been emitted
    binlog: Binlog
    app_state: AppState
    view_rows: ViewRows
    views_per_session: float
    live_runs: int = 0

    def save(self, folder: Path) -> None:
        app = self.app_state
        write_npz(
            folder / STATE_ARRAYS_FILE,
            {
                "popularity": app.popularity,
                "clicked_subcategories": app.clicked_subcategories,
                "recent_views": app.recent_views,
                "recent_cursor": app.recent_cursor,
                **self.view_rows.to_arrays(),
            },
        )
        write_json(
            folder / STATE_FILE,
            {
                "seed": self.seed,
                "clock_ms": self.clock_ms,
                "clock": ms_to_datetime(self.clock_ms).isoformat(),
                "binlog_file_number": self.binlog.file_number,
                "binlog_position": self.binlog.position,
                "popularity_ms": app.popularity_ms,
                "next_impression_number": app.next_impression_number,
                "views_per_session": self.views_per_session,
                "live_runs": self.live_runs,
            },
        )

    @classmethod
    def load(cls, folder: Path) -> SimulatorState:
        document = json.loads((folder / STATE_FILE).read_text())
        with np.load(folder / STATE_ARRAYS_FILE) as arrays:
            app_state = AppState(
                popularity=arrays["popularity"],
                popularity_ms=document["popularity_ms"],
                clicked_subcategories=arrays["clicked_subcategories"],
                recent_views=arrays["recent_views"],
                recent_cursor=arrays["recent_cursor"],
                next_impression_number=document["next_impression_number"],
            )
            view_rows = ViewRows.from_arrays(arrays)
        return cls(
            seed=document["seed"],
            clock_ms=document["clock_ms"],
            binlog=Binlog(document["binlog_file_number"], document["binlog_position"]),
            app_state=app_state,
            view_rows=view_rows,
            views_per_session=document["views_per_session"],
            live_runs=document["live_runs"],
        )

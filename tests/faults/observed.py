"""What the warehouse holds after a fault, in the terms of tests/faults/world.py."""

from __future__ import annotations

from collections import Counter
from datetime import UTC

from newsrec_assets.resources.warehouse import DuckDBWarehouse
from tests.faults.world import ExpectedView


def view_events(warehouse: DuckDBWarehouse) -> Counter:
    rows = warehouse.query(
        "select user_id, article_id, view_number, viewed_at, impression_id from main.view_events"
    ).to_pylist()
    return Counter(
        ExpectedView(
            r["user_id"],
            r["article_id"],
            r["view_number"],
            r["viewed_at"].replace(tzinfo=UTC),
            r["impression_id"],
        )
        for r in rows
    )


def current_titles(warehouse: DuckDBWarehouse) -> dict[str, str]:
    return {
        r["article_id"]: r["title"]
        for r in warehouse.query("select article_id, title from main.current_articles").to_pylist()
    }


def stored_changes(warehouse: DuckDBWarehouse) -> int:
    articles = warehouse.scalar("select count(*) from raw.cdc_articles")
    return articles + warehouse.scalar("select count(*) from raw.cdc_user_article_views")


def tally(expected: Counter, observed: Counter) -> tuple[int, int, int]:
    """(events observed, expected ones missing, observed ones invented)."""
    return sum(observed.values()), sum((expected - observed).values()), sum((observed - expected).values())

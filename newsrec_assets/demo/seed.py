"""Serve popular articles at once: the cold-start list from the landing files, into the online store.

Runs (as `newsrec seed-popular`) before the API starts, unless a list is there already (a second
`make demo`, or a batch has published): users get today's popular articles while the initial
build runs, and the batch's lists replace them when it publishes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from newsrec_assets.domain.landing_format import parse_landing_file
from newsrec_assets.domain.landing_popularity import popular_now
from newsrec_assets.resources.landing import LocalLandingZone
from newsrec_assets.resources.online_store.base import ArticleMeta, ColdStartList
from newsrec_assets.resources.online_store.sqlite import SQLiteArticleCache, SQLiteListStore

TABLES = ("articles", "user_article_views", "api_view_events")


def seed_popular(landing_dir: Path, store_path: Path, k: int = 100) -> dict:
    """Write the live articles and the popularity list unless the store holds a cold-start list."""
    lists = SQLiteListStore(store_path)
    try:
        existing = lists.get_cold_start()
        if existing is not None:
            k_stored = len(existing.article_ids)
            return {"seeded": False, "reason": "the online store holds a list already", "k": k_stored}
        landing = LocalLandingZone(landing_dir)

        def records():
            for table in TABLES:
                for landing_file in landing.list_files(f"{table}/"):
                    parsed = parse_landing_file(landing.read_bytes(landing_file.path), landing_file.path)
                    yield from (line.record for line in parsed.records)

        popular = popular_now(records(), k)
        if popular is None:
            return {"seeded": False, "reason": f"no live article in {landing_dir}", "k": 0}
        articles = SQLiteArticleCache(store_path)
        try:
            articles.upsert_articles(
                ArticleMeta(
                    article_id=article_id,
                    title=row["title"],
                    category=row["category"],
                    subcategory=row["subcategory"],
                    published_at=row["published_at"],
                    url=row.get("url"),
                )
                for article_id, row in popular.articles.items()
            )
        finally:
            articles.close()
        lists.put_cold_start(
            ColdStartList(tuple(popular.article_ids), popular.scores, datetime.now(UTC), model_version=None)
        )
        return {"seeded": True, "articles": len(popular.articles), "k": len(popular.article_ids)}
    finally:
        lists.close()

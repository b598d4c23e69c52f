"""Recent clicks port: view events that arrived after the last batch publish, per user.

The speed layer keeps them so that a user's second click in a later tick still sees the first
one, without touching the warehouse (DuckDB's single writer may be busy with a batch run).
"""

from __future__ import annotations

import os
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path


class RecentClicks(ABC):
    @abstractmethod
    def add(self, clicks: Iterable[tuple[str, str, int]]) -> None:
        """Record (user_id, article_id, viewed_at_us) clicks; the same click twice is kept once."""

    @abstractmethod
    def since(self, user_ids: Sequence[str], after_us: int) -> dict[str, list[tuple[str, int]]]:
        """Per user, the (article_id, viewed_at_us) clicks newer than `after_us`, newest first."""

    @abstractmethod
    def forget_before(self, before_us: int) -> int:
        """Drop clicks a published batch already accounts for; returns how many."""


class SQLiteRecentClicks(RecentClicks):
    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as connection:
            connection.execute("pragma journal_mode=wal")
            connection.execute(
                "create table if not exists recent_clicks (user_id text not null, article_id text not null, "
                "viewed_at_us integer not null, primary key (user_id, article_id, viewed_at_us)) "
                "without rowid"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10, isolation_level=None)

    def add(self, clicks: Iterable[tuple[str, str, int]]) -> None:
        with self._connect() as connection:
            connection.execute("begin immediate")
            connection.executemany("insert or ignore into recent_clicks values (?, ?, ?)", list(clicks))
            connection.execute("commit")

    def since(self, user_ids: Sequence[str], after_us: int) -> dict[str, list[tuple[str, int]]]:
        found: dict[str, list[tuple[str, int]]] = {user_id: [] for user_id in user_ids}
        if not user_ids:
            return found
        placeholders = ",".join("?" * len(user_ids))
        with self._connect() as connection:
            rows = connection.execute(
                "select user_id, article_id, viewed_at_us from recent_clicks "
                f"where user_id in ({placeholders}) and viewed_at_us > ? order by viewed_at_us desc",
                [*user_ids, after_us],
            ).fetchall()
        for user_id, article_id, viewed_at_us in rows:
            found[user_id].append((article_id, viewed_at_us))
        return found

    def forget_before(self, before_us: int) -> int:
        with self._connect() as connection:
            return connection.execute(
                "delete from recent_clicks where viewed_at_us <= ?", [before_us]
            ).rowcount

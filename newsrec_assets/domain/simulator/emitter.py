"""Turns simulated changes into Datastream change records and writes them to the landing folder.

The database has one binlog for all tables, so every change gets a (log_file, log_position) that
grows with its source time; changes are ordered by source time, then table (an article exists
before it is shown, a list is shown before it is clicked), then their order within the table.
Records are built only through `ChangeRecord` from `newsrec_assets.domain.cdc`.
"""

from __future__ import annotations

import os
import uuid as uuid_lib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from newsrec_assets.domain.cdc import ChangeRecord
from newsrec_assets.domain.simulator.app import Impressions, Views
from newsrec_assets.domain.simulator.world import (
    ArticleChange,
    article_id,
    impression_id,
    ms_to_datetime,
    user_id,
)

TABLES = ("articles", "impressions", "user_article_views")  # also the tie-break order at equal times
ARTICLES, IMPRESSIONS, VIEWS = range(3)
MAX_BINLOG_FILE_BYTES = 64 * 1024 * 1024
BINLOG_HEADER_BYTES = 4
# Approximate binlog event sizes per table (bytes): only the monotonic growth matters.
EVENT_SIZE_RANGE = {ARTICLES: (900, 2400), IMPRESSIONS: (140, 180), VIEWS: (170, 230)}
MEAN_READ_LAG_MS = 1_500


def binlog_file_name(number: int) -> str:
    return f"mysql-bin.{number:06d}"


@dataclass
class Binlog:
    """The database's single binary log: where the next event will be written."""

    file_number: int = 1
    position: int = BINLOG_HEADER_BYTES

    def append(self, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """File numbers and positions of events of these sizes, written in order."""
        file_numbers = np.empty(len(sizes), dtype=np.int64)
        positions = np.empty(len(sizes), dtype=np.int64)
        start = 0
        while start < len(sizes):
            ends = self.position + np.cumsum(sizes[start:])
            fits = int(np.searchsorted(ends, MAX_BINLOG_FILE_BYTES, side="right"))
            if fits == 0 and self.position == BINLOG_HEADER_BYTES:
                fits = 1  # an event larger than a whole file still goes somewhere
            file_numbers[start : start + fits] = self.file_number
            positions[start : start + fits] = ends[:fits] - sizes[start : start + fits]
            if fits:
                self.position = int(ends[fits - 1])
            start += fits
            if start < len(sizes):  # rotate, as MySQL does at max_binlog_size
                self.file_number += 1
                self.position = BINLOG_HEADER_BYTES
        return file_numbers, positions


@dataclass
class ViewRows:
    """The current `user_article_views` rows: view count and first view per (user, article)."""

    rows: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)

    def record(self, views: Views) -> tuple[np.ndarray, np.ndarray]:
        """Apply views in order; return each one's new view_count and the row's first_viewed time."""
        view_count = np.empty(len(views), dtype=np.int64)
        first_ms = np.empty(len(views), dtype=np.int64)
        for i, (user, article, viewed) in enumerate(
            zip(views.user.tolist(), views.article.tolist(), views.viewed_ms.tolist(), strict=True)
        ):
            count, first = self.rows.get((user, article), (0, viewed))
            self.rows[(user, article)] = (count + 1, first)
            view_count[i], first_ms[i] = count + 1, first
        return view_count, first_ms

    def to_arrays(self) -> dict[str, np.ndarray]:
        keys = np.asarray(list(self.rows), dtype=np.int64).reshape(-1, 2)
        values = np.asarray(list(self.rows.values()), dtype=np.int64).reshape(-1, 2)
        return {
            "row_user": keys[:, 0],
            "row_article": keys[:, 1],
            "row_views": values[:, 0],
            "row_first_ms": values[:, 1],
        }

    @classmethod
    def from_arrays(cls, arrays: Any) -> ViewRows:
        keys = zip(arrays["row_user"].tolist(), arrays["row_article"].tolist(), strict=True)
        values = zip(arrays["row_views"].tolist(), arrays["row_first_ms"].tolist(), strict=True)
        return cls(dict(zip(keys, values, strict=True)))


@dataclass
class ChangeLog:
    """A batch of changes of all three tables, ready to be rendered as change records."""

    article_changes: list[ArticleChange]
    impressions: Impressions
    views: Views
    table: np.ndarray  # per change, in binlog order
    index: np.ndarray  # index into the table's own rows
    source_ms: np.ndarray
    read_ms: np.ndarray
    log_file: np.ndarray
    log_position: np.ndarray
    uuid_bytes: bytes
    view_count: np.ndarray  # per view row
    first_viewed_ms: np.ndarray  # per view row

    def __len__(self) -> int:
        return len(self.table)

    @classmethod
    def build(
        cls,
        rng: np.random.Generator,
        article_changes: list[ArticleChange],
        impressions: Impressions,
        views: Views,
        binlog: Binlog,
        view_rows: ViewRows,
    ) -> ChangeLog:
        """Order the changes as the database commits them and give each its log position and uuid."""
        times = np.concatenate(
            [
                np.asarray([c.time_ms for c in article_changes], dtype=np.int64),
                impressions.shown_ms,
                views.viewed_ms,
            ]
        )
        table = np.concatenate(
            [
                np.full(len(article_changes), ARTICLES),
                np.full(len(impressions), IMPRESSIONS),
                np.full(len(views), VIEWS),
            ]
        ).astype(np.int64)
        index = np.concatenate(
            [np.arange(len(article_changes)), np.arange(len(impressions)), np.arange(len(views))]
        ).astype(np.int64)
        order = np.lexsort((index, table, times))
        table, index, times = table[order], index[order], times[order]

        # View counts follow the commit order of the views.
        views_in_order = index[table == VIEWS]
        view_count = np.empty(len(views), dtype=np.int64)
        first_viewed_ms = np.empty(len(views), dtype=np.int64)
        view_count[views_in_order], first_viewed_ms[views_in_order] = view_rows.record(
            views.select(views_in_order)
        )

        sizes = np.empty(len(table), dtype=np.int64)
        for code, (low, high) in EVENT_SIZE_RANGE.items():
            of_table = table == code
            sizes[of_table] = rng.integers(low, high, size=int(of_table.sum()))
        log_file, log_position = binlog.append(sizes)
        read_ms = times + 200 + rng.exponential(MEAN_READ_LAG_MS, size=len(times)).astype(np.int64)
        return cls(
            article_changes=article_changes,
            impressions=impressions,
            views=views,
            table=table,
            index=index,
            source_ms=times,
            read_ms=read_ms,
            log_file=log_file,
            log_position=log_position,
            uuid_bytes=rng.bytes(16 * len(table)),
            view_count=view_count,
            first_viewed_ms=first_viewed_ms,
        )

    def uuid(self, change: int) -> str:
        return uuid_at(self.uuid_bytes, change)

    def record(self, change: int, uuid: str | None = None, read_ms: int | None = None) -> ChangeRecord:
        """The change record of one change; a re-read passes a new uuid and a later read time."""
        table, index = int(self.table[change]), int(self.index[change])
        if table == ARTICLES:
            change_type, payload = self.article_changes[index].change_type, self.article_changes[index].row
        elif table == IMPRESSIONS:
            change_type, payload = "INSERT", self._impression_row(index)
        else:
            change_type = "INSERT" if self.view_count[index] == 1 else "UPDATE-INSERT"
            payload = self._view_row(index)
        return ChangeRecord(
            table=TABLES[table],
            change_type=change_type,
            payload=payload,
            source_timestamp=ms_to_datetime(int(self.source_ms[change])),
            read_timestamp=ms_to_datetime(int(self.read_ms[change] if read_ms is None else read_ms)),
            log_file=binlog_file_name(int(self.log_file[change])),
            log_position=int(self.log_position[change]),
            uuid=self.uuid(change) if uuid is None else uuid,
        )

    def _impression_row(self, index: int) -> dict[str, Any]:
        impressions = self.impressions
        return {
            "impression_id": impression_id(int(impressions.number[index])),
            "user_id": user_id(int(impressions.user[index])),
            "article_id": article_id(int(impressions.article[index])),
            "position": int(impressions.position[index]),
            "shown_at": ms_to_datetime(int(impressions.shown_ms[index])),
        }

    def _view_row(self, index: int) -> dict[str, Any]:
        """The `user_article_views` row right after this view."""
        views = self.views
        number = int(views.impression_number[index])
        return {
            "user_id": user_id(int(views.user[index])),
            "article_id": article_id(int(views.article[index])),
            "view_count": int(self.view_count[index]),
            "first_viewed_at": ms_to_datetime(int(self.first_viewed_ms[index])),
            "last_viewed_at": ms_to_datetime(int(views.viewed_ms[index])),
            "last_impression_id": impression_id(number) if number >= 0 else None,
        }


class LandingWriter:
    """Writes `<landing>/<table>/<YYYY-MM-DD>/<HHMM>-<seq>.jsonl` files, each appearing atomically."""

    def __init__(self, landing: Path, window_minutes: int) -> None:
        self.landing = Path(landing)
        self.window_ms = window_minutes * 60_000
        self.files_written = 0
        self._next_seq: dict[tuple[str, int], int] = {}

    def window_of(self, epoch_ms: np.ndarray) -> np.ndarray:
        return epoch_ms // self.window_ms * self.window_ms

    def path(self, table: str, window_ms: int, seq: int) -> Path:
        start = ms_to_datetime(window_ms)
        return self.landing / table / start.strftime("%Y-%m-%d") / f"{start:%H%M}-{seq:04d}.jsonl"

    def write(self, table: str, window_ms: int, seq: int, lines: list[str]) -> Path:
        """Write a file atomically: readers globbing `*.jsonl` never see it half-written."""
        target = self.path(table, window_ms, seq)
        target.parent.mkdir(parents=True, exist_ok=True)
        # A hidden `.tmp` name in the same directory: outside the glob, and os.replace is atomic there.
        temporary = target.with_name(f".{target.name}.tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        os.replace(temporary, target)
        self.files_written += 1
        return target

    def next_seq(self, table: str, window_ms: int) -> int:
        """The next free file number in a window (live mode appends files to existing windows)."""
        key = (table, window_ms)
        if key not in self._next_seq:
            directory = self.path(table, window_ms, 0).parent
            prefix = f"{ms_to_datetime(window_ms):%H%M}-"
            taken = [
                int(path.stem[len(prefix) :])
                for path in directory.glob(f"{prefix}*.jsonl")
                if path.stem[len(prefix) :].isdigit()
            ]
            self._next_seq[key] = max(taken, default=-1) + 1
        seq = self._next_seq[key]
        self._next_seq[key] = seq + 1
        return seq


def uuid_at(buffer: bytes, index: int) -> str:
    """The index-th version-4 uuid drawn as 16 random bytes each (deterministic, unlike uuid4())."""
    return str(uuid_lib.UUID(bytes=buffer[16 * index : 16 * index + 16], version=4))


# How a change is delivered under at-least-once noise.
ON_TIME, LATE, RESENT, REREAD = range(4)


@dataclass(frozen=True)
class Redelivery:
    """At-least-once noise: how often a change is delivered late or twice."""

    late_share: float = 0.01  # delivered once, in a later file
    resent_share: float = 0.015  # twice with the same uuid: a file delivered again
    reread_share: float = 0.015  # twice, the copy with a new uuid: the stream read the change again
    max_windows_late: int = 3

    def classify(self, draws: np.ndarray) -> np.ndarray:
        """ON_TIME, LATE, RESENT or REREAD for uniform draws in [0, 1)."""
        thresholds = np.cumsum([self.late_share, self.resent_share, self.reread_share])
        kinds = np.array([LATE, RESENT, REREAD, ON_TIME])
        return kinds[np.searchsorted(thresholds, draws, side="right")]


@dataclass
class Placement:
    """Which file each delivered line goes to: one row per delivery (originals and copies)."""

    change: np.ndarray
    is_reread: np.ndarray  # a copy with a new uuid (built from reread_uuids) and a later read time
    window_ms: np.ndarray
    seq: np.ndarray  # 0: the window's regular file, 1: its re-delivery file
    read_ms: np.ndarray
    reread_uuids: bytes = b""


@dataclass
class DeliveryStats:
    late: int = 0
    resent: int = 0
    reread: int = 0


def place_history(
    log: ChangeLog,
    writer: LandingWriter,
    last_window_ms: int,
    noise_rng: np.random.Generator | None,
    redelivery: Redelivery,
) -> tuple[Placement, DeliveryStats]:
    """One file per table per window; with `noise_rng`, also late and duplicate deliveries."""
    n = len(log)
    window = writer.window_of(log.source_ms)
    placement = Placement(
        change=np.arange(n),
        is_reread=np.zeros(n, dtype=bool),
        window_ms=window,
        seq=np.zeros(n, dtype=np.int64),
        read_ms=log.read_ms,
    )
    if noise_rng is None:
        return placement, DeliveryStats()

    kind = redelivery.classify(noise_rng.random(n))
    # Late changes sit in the regular file of a later window, read when that file was cut.
    lateness = np.where(kind == LATE, noise_rng.integers(1, redelivery.max_windows_late + 1, size=n), 0)
    late_window = np.minimum(window + lateness * writer.window_ms, last_window_ms)
    read_ms = log.read_ms + (late_window - window)
    # Copies go to the re-delivery file (seq 1) of the same or a later window; a re-read copy has
    # a new uuid and a later read time, a re-sent copy is the very same line.
    copied = np.flatnonzero((kind == RESENT) | (kind == REREAD))
    windows_after = noise_rng.integers(0, redelivery.max_windows_late, size=len(copied))
    copy_window = np.minimum(window[copied] + windows_after * writer.window_ms, last_window_ms)
    copy_is_reread = kind[copied] == REREAD
    copy_read_ms = read_ms[copied] + np.where(
        copy_is_reread, noise_rng.integers(30_000, 600_000, size=len(copied)), 0
    )
    stats = DeliveryStats(
        late=int((late_window != window).sum()),
        resent=int((kind == RESENT).sum()),
        reread=int((kind == REREAD).sum()),
    )
    placement = Placement(
        change=np.concatenate([placement.change, copied]),
        is_reread=np.concatenate([placement.is_reread, copy_is_reread]),
        window_ms=np.concatenate([late_window, copy_window]),
        seq=np.concatenate([placement.seq, np.ones(len(copied), dtype=np.int64)]),
        read_ms=np.concatenate([read_ms, copy_read_ms]),
        reread_uuids=noise_rng.bytes(16 * (n + len(copied))),
    )
    return placement, stats


def render_files(log: ChangeLog, placement: Placement) -> Iterator[tuple[str, int, int, list[str]]]:
    """(table, window, seq, lines) per file, files in time order, lines in read-time order."""
    table = log.table[placement.change]
    order = np.lexsort((placement.change, placement.read_ms, placement.seq, placement.window_ms, table))
    keys = np.stack([table[order], placement.window_ms[order], placement.seq[order]], axis=1)
    boundaries = np.flatnonzero(np.any(keys[1:] != keys[:-1], axis=1)) + 1
    for group in np.split(order, boundaries):
        if len(group) == 0:
            continue
        lines = []
        for delivery in group.tolist():
            change, read_ms = int(placement.change[delivery]), int(placement.read_ms[delivery])
            new_uuid = uuid_at(placement.reread_uuids, delivery) if placement.is_reread[delivery] else None
            lines.append(log.record(change, uuid=new_uuid, read_ms=read_ms).to_json_line())
        first = group[0]
        yield TABLES[int(table[first])], int(placement.window_ms[first]), int(placement.seq[first]), lines


def count_records(log: ChangeLog) -> dict[str, dict[str, int]]:
    """Distinct changes per table and change type."""
    first_views = int((log.view_count == 1).sum())
    return {
        "articles": dict(sorted(Counter(change.change_type for change in log.article_changes).items())),
        "impressions": {"INSERT": len(log.impressions)},
        "user_article_views": {"INSERT": first_views, "UPDATE-INSERT": len(log.views) - first_views},
    }

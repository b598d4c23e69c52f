"""MIND (Microsoft News Dataset) to landing-format change records.

`news.tsv` rows become `articles` INSERTs (title, abstract as the body, category, subcategory,
URL); each `behaviors.tsv` row becomes an impression (one `impressions` INSERT per shown article)
and its clicks become view events on the in-place `user_article_views` rows (INSERT on a user's
first view of an article, UPDATE-INSERT after). A user's pre-window click history (the `History`
column, oldest first in MIND) becomes views without an impression id, at increasing times spread
over the day before the first impression of the file, so "the latest clicks" keep MIND's order.
MIND has no publication times: an article is taken as published one hour before the first
impression or history click that references it.

Malformed rows and references to unknown news are counted and reported, never fatal: an unknown
article is left out of its list or history, and a row whose whole list is unknown is skipped.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from newsrec_assets.domain.cdc import ChangeRecord

MIND_TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
HISTORY_LEAD = timedelta(days=1)
PUBLICATION_LEAD = timedelta(hours=1)


@dataclass
class MindArticle:
    article_id: str
    category: str
    subcategory: str
    title: str
    abstract: str
    url: str | None


@dataclass
class MindImpression:
    impression_id: str
    user_id: str
    shown_at: datetime
    history: list[str]
    shown: list[tuple[str, bool]]  # article id, clicked


@dataclass
class ImportReport:
    """What an import read, wrote and left out; every behaviour row is accounted for."""

    news_rows: int = 0
    news_malformed: int = 0
    behavior_rows: int = 0
    behavior_malformed: int = 0
    impressions_with_unknown_news: int = 0  # rows whose list or history names unknown news
    unknown_news_references: int = 0  # such references, each left out
    unknown_news_ids: int = 0  # distinct unknown news ids
    impressions_skipped_no_known_news: int = 0  # rows whose whole list was unknown: not written
    impressions_written: int = 0  # behaviour rows written as an impression (one served list each)
    impression_rows_written: int = 0  # articles shown in them (one `impressions` record each)
    views_written: int = 0  # clicks in the lists
    history_views_written: int = 0  # clicks from the users' pre-window histories
    articles_written: int = 0
    problems: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}


def read_news(path: Path, report: ImportReport) -> dict[str, MindArticle]:
    articles: dict[str, MindArticle] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            report.news_rows += 1
            if len(row) < 5 or not row[0] or not row[3]:
                report.news_malformed += 1
                report.problems["news: fewer than 5 columns or no id/title"] += 1
                continue
            article_id, category, subcategory, title, abstract = (value.strip() for value in row[:5])
            url = row[5].strip() if len(row) > 5 and row[5].strip() else None
            articles[article_id] = MindArticle(article_id, category, subcategory, title, abstract, url)
    return articles


def parse_behaviors(lines: Iterable[str], report: ImportReport) -> Iterator[MindImpression]:
    for line in lines:
        if not line.strip():
            continue
        report.behavior_rows += 1
        columns = line.rstrip("\n").split("\t")
        if len(columns) != 5:
            report.behavior_malformed += 1
            report.problems["behaviors: not 5 tab-separated columns"] += 1
            continue
        impression_id, user_id, time_text, history_text, impressions_text = columns
        try:
            shown_at = datetime.strptime(time_text.strip(), MIND_TIME_FORMAT).replace(tzinfo=UTC)
            shown = []
            for item in impressions_text.split():
                article_id, _, label = item.rpartition("-")
                if label not in ("0", "1") or not article_id:
                    raise ValueError(f"impression item {item!r} is not <news id>-<0|1>")
                shown.append((article_id, label == "1"))
        except ValueError as error:
            report.behavior_malformed += 1
            report.problems[f"behaviors: {type(error).__name__}"] += 1
            continue
        if not user_id or not shown:
            report.behavior_malformed += 1
            report.problems["behaviors: no user id or no impressions"] += 1
            continue
        yield MindImpression(impression_id, user_id, shown_at, history_text.split(), shown)


def convert(news_path: Path, behaviors_path: Path) -> tuple[list[ChangeRecord], ImportReport]:
    """All change records of a MIND split, ordered by source time, and what was skipped."""
    report = ImportReport()
    articles = read_news(news_path, report)
    with behaviors_path.open(encoding="utf-8") as handle:
        impressions = sorted(parse_behaviors(handle, report), key=lambda i: (i.shown_at, i.impression_id))
    if not impressions:
        return [], report

    start = impressions[0].shown_at
    kept: list[MindImpression] = []
    unknown_ids: set[str] = set()
    for impression in impressions:
        unknown = [a for a, _ in impression.shown if a not in articles]
        unknown += [a for a in impression.history if a not in articles]
        if unknown:
            report.impressions_with_unknown_news += 1
            report.unknown_news_references += len(unknown)
            unknown_ids.update(unknown)
            impression.shown = [(a, c) for a, c in impression.shown if a in articles]
            impression.history = [a for a in impression.history if a in articles]
            if not impression.shown:
                report.impressions_skipped_no_known_news += 1
                continue
        kept.append(impression)
    report.unknown_news_ids = len(unknown_ids)

    # One history per user (MIND repeats it on each of the user's rows): the first row's, oldest
    # click first, spread over the day before the file's first impression.
    history_clicks: list[tuple[datetime, str, str]] = []  # time, user, article
    history_done: set[str] = set()
    for impression in kept:
        if impression.user_id in history_done:
            continue
        history_done.add(impression.user_id)
        step = HISTORY_LEAD / (len(impression.history) + 1)
        for rank, article_id in enumerate(impression.history, start=1):
            history_clicks.append((start - HISTORY_LEAD + rank * step, impression.user_id, article_id))

    first_seen: dict[str, datetime] = {}
    for moment, _, article_id in history_clicks:
        first_seen[article_id] = min(first_seen.get(article_id, moment), moment)
    for impression in kept:
        for article_id, _ in impression.shown:
            first_seen[article_id] = min(first_seen.get(article_id, impression.shown_at), impression.shown_at)

    events: list[tuple[datetime, int, str, dict]] = []  # time, tie-break, table, payload/meta
    for article_id, seen in first_seen.items():
        article = articles[article_id]
        published_at = seen - PUBLICATION_LEAD
        events.append(
            (
                published_at,
                0,
                "articles",
                {
                    "article_id": article_id,
                    "title": article.title,
                    "body": article.abstract,
                    "category": article.category,
                    "subcategory": article.subcategory,
                    "url": article.url,
                    "status": "published",
                    "published_at": published_at,
                    "updated_at": published_at,
                },
            )
        )
    for moment, user_id, article_id in history_clicks:
        events.append((moment, 1, "history", {"user_id": user_id, "article_id": article_id}))
    for impression in kept:
        report.impressions_written += 1
        for position, (article_id, clicked) in enumerate(impression.shown):
            events.append(
                (
                    impression.shown_at,
                    2,
                    "impressions",
                    {
                        "impression_id": impression.impression_id,
                        "user_id": impression.user_id,
                        "article_id": article_id,
                        "position": position,
                        "shown_at": impression.shown_at,
                    },
                )
            )
            if clicked:
                events.append(
                    (
                        impression.shown_at,
                        3,
                        "click",
                        {
                            "user_id": impression.user_id,
                            "article_id": article_id,
                            "impression_id": impression.impression_id,
                        },
                    )
                )
    events.sort(key=lambda e: (e[0], e[1]))

    records: list[ChangeRecord] = []
    view_counts: dict[tuple[str, str], tuple[int, datetime]] = {}
    for position, (moment, _, kind, payload) in enumerate(events, start=1):
        table = kind
        if kind in ("history", "click"):
            table = "user_article_views"
            row = (payload["user_id"], payload["article_id"])
            count, first = view_counts.get(row, (0, moment))
            view_counts[row] = (count + 1, first)
            payload = {
                "user_id": row[0],
                "article_id": row[1],
                "view_count": count + 1,
                "first_viewed_at": first,
                "last_viewed_at": moment,
                "last_impression_id": payload.get("impression_id"),
            }
            change_type = "INSERT" if count == 0 else "UPDATE-INSERT"
            if kind == "history":
                report.history_views_written += 1
            else:
                report.views_written += 1
        else:
            change_type = "INSERT"
            if kind == "articles":
                report.articles_written += 1
            else:
                report.impression_rows_written += 1
        records.append(
            ChangeRecord(
                table=table,
                change_type=change_type,
                payload=payload,
                source_timestamp=moment,
                read_timestamp=moment + timedelta(seconds=1),
                log_file="mind-import",
                log_position=position,
                read_method="mind-import",
            )
        )
    return records, report


def write_landing_files(records: list[ChangeRecord], landing, window_minutes: int = 10) -> int:
    """Write records as `<table>/<date>/<HHMM>-mind.jsonl` files, one per table and time window.

    `landing` is anything with `write_file(path, bytes)` (the landing-zone port). Returns the
    number of files written.
    """
    window = timedelta(minutes=window_minutes)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    groups: dict[tuple[str, datetime], list[str]] = {}
    for record in records:
        start = epoch + (record.source_timestamp - epoch) // window * window
        groups.setdefault((record.table, start), []).append(record.to_json_line())
    for (table, start), lines in groups.items():
        landing.write_file(
            f"{table}/{start:%Y-%m-%d}/{start:%H%M}-mind.jsonl", ("\n".join(lines) + "\n").encode()
        )
    return len(groups)

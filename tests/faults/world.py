"""A tiny news app's change stream with every delivery fault, and the truth written by hand.

Nothing here comes from the simulator: each row's history and what must come out of it (view
events, current articles, quarantine reasons) are spelled out below, so the fault suite checks the
pipeline against what the test itself says happened.
"""

from __future__ import annotations

import gzip
import itertools
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from newsrec_assets.domain.cdc import ChangeRecord
from newsrec_assets.resources.landing import LandingZone

T = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
BOM = b"\xef\xbb\xbf"


def minutes(n: float) -> datetime:
    return T + timedelta(minutes=n)


@dataclass(frozen=True)
class ExpectedView:
    user_id: str
    article_id: str
    view_number: int
    viewed_at: datetime
    impression_id: str | None


@dataclass
class FaultWorld:
    """Change records placed into landing files, plus what the marts must show afterwards."""

    files: dict[str, list[bytes]] = field(default_factory=dict)  # path -> lines (bytes, no newline)
    late_files: dict[str, list[bytes]] = field(default_factory=dict)  # land in a later run
    unsupported: list[str] = field(default_factory=list)
    views: list[ExpectedView] = field(default_factory=list)
    views_before_late_file: list[ExpectedView] = field(default_factory=list)
    articles: dict[str, str] = field(default_factory=dict)  # live article id -> title
    quarantine_reasons: list[str] = field(default_factory=list)  # one expected substring per bad line
    rejected_jumps: list[tuple[str, str, int]] = field(default_factory=list)  # user, article, view_count
    distinct_changes: int = 0
    _positions: itertools.count = field(default_factory=lambda: itertools.count(100))

    # ---- building records
    def change(
        self, table: str, change_type: str, payload: dict[str, Any], at: datetime, **kw
    ) -> ChangeRecord:
        if "lsn" not in kw:
            kw |= {"log_file": "mysql-bin.000001", "log_position": next(self._positions)}
        self.distinct_changes += 1
        return ChangeRecord(table, change_type, payload, at, at + timedelta(seconds=2), **kw)

    def article(self, article_id: str, title: str, at: datetime) -> dict[str, Any]:
        return {
            "article_id": article_id,
            "title": title,
            "body": f"Body of {article_id}.",
            "category": "news",
            "subcategory": "world",
            "status": "published",
            "published_at": T,
            "updated_at": at,
        }

    def view_row(self, user_id: str, article_id: str, count: int, at: datetime, impression: str | None):
        return {
            "user_id": user_id,
            "article_id": article_id,
            "view_count": count,
            "first_viewed_at": at,
            "last_viewed_at": at,
            "last_impression_id": impression,
        }

    def land(self, path: str, *items: ChangeRecord | dict | bytes, late: bool = False) -> None:
        lines = [
            item.to_json_line().encode()
            if isinstance(item, ChangeRecord)
            else item
            if isinstance(item, bytes)
            else json.dumps(item).encode()
            for item in items
        ]
        (self.late_files if late else self.files).setdefault(path, []).extend(lines)

    # ---- writing
    @staticmethod
    def encode(path: str, lines: list[bytes]) -> bytes:
        if "bom-crlf" in path:
            return BOM + b"".join(line + b"\r\n" for line in lines)
        content = b"".join(line + b"\n" for line in lines)
        return gzip.compress(content) if path.endswith(".gz") else content

    def write(self, zone: LandingZone, late: bool = False) -> None:
        for path, lines in (self.late_files if late else self.files).items():
            zone.write_file(path, self.encode(path, lines))
        if not late:
            for path in self.unsupported:
                zone.write_file(path, b"Obj\x01 an Avro container")


PLAIN = "user_article_views/2026-11-20/0800-0001.jsonl"
GZIP = "newsapp_user_article_views/2026/11/20/08/10/5f1e_mysql-cdc-binlog_0_0.jsonl.gz"
BOM_CRLF = "user_article_views/2026-11-20/0810-bom-crlf.jsonl"
REREADS = "newsapp_user_article_views/2026/11/20/08/20/77aa_mysql-cdc-binlog_1_0.json"
POSTGRES = "user_article_views/2026-11-20/0810-postgres.json.gz"
BAD = "user_article_views/2026-11-20/0830-bad.jsonl"
ARTICLES = "articles/2026-11-20/0800-0001.jsonl"
LATE = "user_article_views/2026-11-20/0820-late.jsonl"
AVRO = "newsapp_articles/2026/11/20/08/00/9c0d_mysql-cdc-binlog_0_0.avro"


def build_world() -> FaultWorld:
    w = FaultWorld()
    expect = w.views.append

    # -- articles: edit; delete by key; delete without a key; delete and re-publish
    a1 = w.article("a1", "Harbour closed", minutes(0))
    a1_edited = a1 | {"title": "Harbour reopens", "updated_at": minutes(60)}
    w.land(ARTICLES, w.change("articles", "INSERT", a1, minutes(0)))
    before = w.change("articles", "UPDATE-DELETE", a1, minutes(60))
    after = replace(
        w.change("articles", "UPDATE-INSERT", a1_edited, minutes(60)), log_position=before.log_position
    )
    w.land(ARTICLES, before, after)
    w.land(ARTICLES, w.change("articles", "INSERT", w.article("a2", "Gone soon", minutes(0)), minutes(0)))
    w.land(ARTICLES, w.change("articles", "DELETE", {"article_id": "a2"}, minutes(120)))
    w.land(ARTICLES, w.change("articles", "INSERT", w.article("a3", "Stays", minutes(0)), minutes(0)))
    keyless_delete = w.change("articles", "DELETE", {"article_id": "a3"}, minutes(120)).to_json()
    keyless_delete["payload"] = {}
    w.distinct_changes -= 1
    w.land(ARTICLES, keyless_delete)
    w.quarantine_reasons.append("DELETE without its primary key")
    a4 = w.article("a4", "First version", minutes(0))
    w.land(ARTICLES, w.change("articles", "INSERT", a4, minutes(0)))
    w.land(ARTICLES, w.change("articles", "DELETE", a4, minutes(60)))
    a4_again = a4 | {"title": "Published again", "updated_at": minutes(180)}
    w.land(ARTICLES, w.change("articles", "INSERT", a4_again, minutes(180)))
    w.articles = {"a1": "Harbour reopens", "a3": "Stays", "a4": "Published again"}

    # -- u1/a1: three views; the first file starts with a BOM and has CRLF ends; every change is
    #    re-sent (same uuid) in the gzip file and re-read (new uuid) in the .json file
    u1 = [
        w.change("user_article_views", "INSERT", w.view_row("u1", "a1", 1, minutes(10), "i1"), minutes(10)),
        w.change(
            "user_article_views", "UPDATE-INSERT", w.view_row("u1", "a1", 2, minutes(20), "i2"), minutes(20)
        ),
        w.change(
            "user_article_views", "UPDATE-INSERT", w.view_row("u1", "a1", 3, minutes(30), None), minutes(30)
        ),
    ]
    w.land(BOM_CRLF, *u1)
    w.land(GZIP, *u1)
    w.land(REREADS, *(replace(r, uuid=f"reread-{n}", read_timestamp=minutes(90)) for n, r in enumerate(u1)))
    for number, (at, impression) in enumerate([(10, "i1"), (20, "i2"), (30, None)], start=1):
        expect(ExpectedView("u1", "a1", number, minutes(at), impression))

    # -- u2/a1: two views, the row deleted (key only), re-inserted, two more views
    w.land(
        PLAIN,
        w.change("user_article_views", "INSERT", w.view_row("u2", "a1", 1, minutes(10), None), minutes(10)),
        w.change(
            "user_article_views", "UPDATE-INSERT", w.view_row("u2", "a1", 2, minutes(20), None), minutes(20)
        ),
        w.change("user_article_views", "DELETE", {"user_id": "u2", "article_id": "a1"}, minutes(40)),
        w.change("user_article_views", "INSERT", w.view_row("u2", "a1", 1, minutes(50), "i5"), minutes(50)),
        w.change(
            "user_article_views", "UPDATE-INSERT", w.view_row("u2", "a1", 2, minutes(60), "i6"), minutes(60)
        ),
    )
    for number, (at, impression) in enumerate([(10, None), (20, None), (50, "i5"), (60, "i6")], start=1):
        expect(ExpectedView("u2", "a1", number, minutes(at), impression))

    # -- u3/a2: a write that coalesced three views
    w.land(
        GZIP,
        w.change("user_article_views", "INSERT", w.view_row("u3", "a2", 1, minutes(10), None), minutes(10)),
        w.change(
            "user_article_views", "UPDATE-INSERT", w.view_row("u3", "a2", 4, minutes(20), "i7"), minutes(20)
        ),
    )
    expect(ExpectedView("u3", "a2", 1, minutes(10), None))
    for number in (2, 3, 4):
        expect(ExpectedView("u3", "a2", number, minutes(20), "i7"))

    # -- u4/a1: a corrupt counter above the ingestion bound (max_view_count) is quarantined
    corrupt = w.change(
        "user_article_views", "UPDATE-INSERT", w.view_row("u4", "a1", 10**12, minutes(20), None), minutes(20)
    )
    w.distinct_changes -= 1
    w.land(
        PLAIN,
        w.change("user_article_views", "INSERT", w.view_row("u4", "a1", 1, minutes(10), None), minutes(10)),
        corrupt,
        w.change(
            "user_article_views", "UPDATE-INSERT", w.view_row("u4", "a1", 2, minutes(30), None), minutes(30)
        ),
    )
    w.quarantine_reasons.append("above the plausible maximum")
    expect(ExpectedView("u4", "a1", 1, minutes(10), None))
    expect(ExpectedView("u4", "a1", 2, minutes(30), None))

    # -- u5/a1: a jump under that bound but above max_views_per_change: rejected, not expanded
    w.land(
        PLAIN,
        w.change("user_article_views", "INSERT", w.view_row("u5", "a1", 1, minutes(10), None), minutes(10)),
        w.change(
            "user_article_views",
            "UPDATE-INSERT",
            w.view_row("u5", "a1", 50_001, minutes(20), None),
            minutes(20),
        ),
        w.change(
            "user_article_views", "UPDATE-INSERT", w.view_row("u5", "a1", 2, minutes(30), None), minutes(30)
        ),
    )
    w.rejected_jumps.append(("u5", "a1", 50_001))
    expect(ExpectedView("u5", "a1", 1, minutes(10), None))
    expect(ExpectedView("u5", "a1", 2, minutes(30), None))

    # -- u6/a1: a PostgreSQL source, three changes in one millisecond ordered only by their LSNs
    #    (as text, 10/10 < 9/FFFFFFF0 < A/0)
    for count, lsn in [(1, "9/FFFFFFF0"), (2, "A/0"), (3, "10/10")]:
        row = w.view_row("u6", "a1", count, minutes(10 + count), f"pg{count}")
        change_type = "INSERT" if count == 1 else "UPDATE"
        record = w.change("user_article_views", "UPDATE-INSERT", row, minutes(10), lsn=lsn)
        document = record.to_json()
        document["source_metadata"]["change_type"] = change_type
        document["read_method"] = "postgresql-cdc-wal"
        w.land(POSTGRES, document)
        expect(ExpectedView("u6", "a1", count, minutes(10 + count), f"pg{count}"))

    # -- u7/a2: the middle change arrives in a late file, ingested by a later run
    w.land(
        PLAIN,
        w.change("user_article_views", "INSERT", w.view_row("u7", "a2", 1, minutes(10), None), minutes(10)),
    )
    w.land(
        LATE,
        w.change(
            "user_article_views", "UPDATE-INSERT", w.view_row("u7", "a2", 2, minutes(20), None), minutes(20)
        ),
        late=True,
    )
    w.land(
        PLAIN,
        w.change(
            "user_article_views", "UPDATE-INSERT", w.view_row("u7", "a2", 3, minutes(30), None), minutes(30)
        ),
    )
    w.views_before_late_file = [v for v in w.views] + [
        ExpectedView("u7", "a2", 1, minutes(10), None),
        ExpectedView("u7", "a2", 2, minutes(30), None),
        ExpectedView("u7", "a2", 3, minutes(30), None),
    ]
    for number, at in [(1, 10), (2, 20), (3, 30)]:
        expect(ExpectedView("u7", "a2", number, minutes(at), None))

    # -- u10/a1: the app's row, whose views the API also receives (the test posts those)
    u10 = [(1, 10, "i9"), (2, 30, None)]
    for count, at, impression in u10:
        change_type = "INSERT" if count == 1 else "UPDATE-INSERT"
        row = w.view_row("u10", "a1", count, minutes(at), impression)
        w.land(PLAIN, w.change("user_article_views", change_type, row, minutes(at)))
        expect(ExpectedView("u10", "a1", count, minutes(at), impression))
        w.views_before_late_file.append(ExpectedView("u10", "a1", count, minutes(at), impression))

    # -- bad lines between good ones: none may fail the file or the run
    template = w.change(
        "user_article_views", "INSERT", w.view_row("u9", "a1", 1, minutes(5), None), minutes(5)
    )
    w.distinct_changes -= 1
    too_far = template.to_json()
    too_far["source_metadata"]["log_position"] = 2**63
    too_many = template.to_json()
    too_many["payload"]["view_count"] = 2**64 - 1
    unknown = template.to_json()
    unknown["source_metadata"]["table"] = "users"
    not_utf8 = template.to_json_line().encode().replace(b"u9", b"u\xff9")
    good = w.change("user_article_views", "INSERT", w.view_row("u8", "a1", 1, minutes(5), None), minutes(5))
    w.land(BAD, b"{broken", too_far, too_many, good, unknown, not_utf8)
    w.quarantine_reasons += [
        "invalid JSON",
        "log_position = 9223372036854775808 is outside its range",
        "view_count = 18446744073709551615 is outside its range",
        "unknown source table",
        "not valid UTF-8",
    ]
    expect(ExpectedView("u8", "a1", 1, minutes(5), None))
    w.views_before_late_file.append(ExpectedView("u8", "a1", 1, minutes(5), None))

    w.unsupported = [AVRO]
    return w

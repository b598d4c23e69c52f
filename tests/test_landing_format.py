"""Landing files: names, encodings, compression, per-record validation and view-event rules."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta

import pytest

from newsrec_assets.domain.cdc import (
    ChangeRecord,
    MalformedChangeRecord,
    RecordLimits,
    lsn_number,
    parse_change_line,
    source_order,
)
from newsrec_assets.domain.events import ViewEvent, reconstruct_view_events, view_row_versions
from newsrec_assets.domain.landing_format import FileKind, landing_file_kind, parse_landing_file
from tests.conftest import T0


def view(user_id: str, view_count: int | None, at, position: int, change_type="UPDATE-INSERT", **extra):
    payload = {"user_id": user_id, "article_id": "a1"}
    if view_count is not None:
        payload |= {
            "view_count": view_count,
            "first_viewed_at": T0,
            "last_viewed_at": at,
            "last_impression_id": None,
        }
    return ChangeRecord(
        table="user_article_views",
        change_type=change_type,
        payload=payload,
        source_timestamp=at,
        read_timestamp=at + timedelta(seconds=1),
        log_file="mysql-bin.000001",
        log_position=position,
        **extra,
    )


def document(record: ChangeRecord, **changes) -> dict:
    """The record's landing JSON with top-level fields, `payload.*` or `metadata.*` replaced."""
    doc = record.to_json()
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            doc["payload" if section == "payload" else "source_metadata"][name] = value
        else:
            doc[key] = value
    return doc


def lines(*items) -> bytes:
    return b"".join(
        (item if isinstance(item, bytes) else json.dumps(item).encode()) + b"\n" for item in items
    )


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("user_article_views/2026-11-20/0800-0001.jsonl", FileKind.RECORDS),
        ("newsapp_user_article_views/2026/11/20/08/05/2b3f_mysql-cdc-binlog_1_0.jsonl", FileKind.RECORDS),
        ("newsapp_articles/2026/11/20/08/05/2b3f_mysql-cdc-binlog_1_0.jsonl.gz", FileKind.RECORDS),
        ("articles/2026-11-20/x.json", FileKind.RECORDS),
        ("articles/2026-11-20/x.json.gz", FileKind.RECORDS),
        ("articles/2026-11-20/x.avro", FileKind.UNSUPPORTED),
        ("articles/2026-11-20/x.jsonl.zst", FileKind.UNSUPPORTED),
        ("articles/2026-11-20/x.gz", FileKind.UNSUPPORTED),
        ("articles/2026-11-20/.0800-0001.jsonl.tmp", FileKind.NOT_A_FILE),
        ("newsapp_articles/2026/11/20/", FileKind.NOT_A_FILE),
    ],
)
def test_file_names_are_classified_without_reading_them(name, kind):
    assert landing_file_kind(name) is kind


def test_bom_and_crlf_change_nothing_about_the_records():
    first, second = view("u1", 1, T0, 10, "INSERT"), view("u1", 2, T0 + timedelta(minutes=3), 11)
    plain = lines(first.to_json(), second.to_json())
    windows = b"\xef\xbb\xbf" + plain.replace(b"\n", b"\r\n")

    expected = parse_landing_file(plain, "f.jsonl")
    parsed = parse_landing_file(windows, "f.jsonl")

    assert parsed.quarantine == [] and len(parsed.records) == 2
    assert parsed == expected
    assert [r.record.payload["last_viewed_at"] for r in parsed.records] == [T0, T0 + timedelta(minutes=3)]


def test_compressed_files_decode_like_plain_ones_even_in_several_gzip_members():
    records = [view("u1", n, T0 + timedelta(minutes=n), 10 + n) for n in range(1, 5)]
    plain = lines(*(r.to_json() for r in records))
    expected = parse_landing_file(plain, "f.jsonl")
    members = gzip.compress(lines(*(r.to_json() for r in records[:2]))) + gzip.compress(
        lines(*(r.to_json() for r in records[2:]))
    )
    for name in ("f.jsonl.gz", "f.json.gz"):
        assert parse_landing_file(gzip.compress(plain), name) == expected
    assert parse_landing_file(members, "f.jsonl.gz") == expected
    assert parse_landing_file(plain, "f.json") == expected


def test_a_truncated_gzip_file_keeps_its_complete_lines_and_quarantines_the_rest():
    records = [view("u1", n, T0 + timedelta(minutes=n), 10 + n) for n in range(1, 200)]
    compressed = gzip.compress(lines(*(r.to_json() for r in records)))
    parsed = parse_landing_file(compressed[: len(compressed) * 2 // 3], "f.jsonl.gz")

    assert 0 < len(parsed.records) < len(records)
    assert [r.record for r in parsed.records] == records[: len(parsed.records)]
    [cut] = parsed.quarantine
    assert cut.line_number == len(parsed.records) + 1 and "truncated" in cut.reason

    garbage = parse_landing_file(b"this is not gzip", "f.jsonl.gz")
    assert garbage.records == [] and "damaged" in garbage.quarantine[0].reason


def test_undecodable_bytes_are_quarantined_with_the_bytes_kept():
    good = view("u1", 1, T0, 10, "INSERT").to_json()
    bad = json.dumps(view("u2", 1, T0, 11, "INSERT").to_json()).encode().replace(b"u2", b"u\xff2")
    parsed = parse_landing_file(lines(good, bad), "f.jsonl")
    assert len(parsed.records) == 1
    [entry] = parsed.quarantine
    assert (entry.line_number, entry.reason) == (2, "not valid UTF-8 at byte " + str(bad.index(b"\xff")))
    assert "u\\xff2" in entry.raw_line

    utf16 = parse_landing_file(json.dumps(good).encode("utf-16"), "f.jsonl")
    assert utf16.records == [] and "UTF-16" in utf16.quarantine[0].reason


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"source_metadata__log_position": 2**63}, "log_position = 9223372036854775808 is outside its range"),
        ({"source_metadata__log_position": 2**64}, "log_position must be an integer"),
        ({"source_metadata__log_position": -1}, "log_position = -1 is outside its range"),
        ({"payload__view_count": 2**64 - 1}, "view_count = 18446744073709551615 is outside its range"),
        ({"payload__view_count": 2**70}, "view_count must be an integer"),
        ({"payload__view_count": -3}, "view_count = -3 is outside its range"),
        ({"payload__view_count": 10**12}, "above the plausible maximum 1000000"),
        ({"source_metadata__lsn": "not/an-lsn"}, "is not a PostgreSQL LSN"),
        ({"source_metadata__lsn": 1234}, "is not a PostgreSQL LSN"),
        ({"source_timestamp": "0001-01-01T00:00:00Z"}, "before 1970"),
        ({"payload__last_viewed_at": "1969-12-31T23:59:59Z"}, "before 1970"),
    ],
)
def test_out_of_range_values_are_quarantined_with_a_reason(changes, reason):
    good = view("u1", 1, T0, 10, "INSERT")
    bad = document(view("u2", 3, T0, 11), **changes)
    parsed = parse_landing_file(lines(good.to_json(), bad), "f.jsonl")
    assert [r.record for r in parsed.records] == [good]
    [entry] = parsed.quarantine
    assert entry.line_number == 2 and reason in entry.reason, entry.reason


def test_the_view_count_bound_is_configurable():
    line = json.dumps(view("u1", 5000, T0, 10).to_json())
    assert parse_change_line(line).payload["view_count"] == 5000
    with pytest.raises(MalformedChangeRecord, match="plausible maximum 100 "):
        parse_change_line(line, RecordLimits(max_view_count=100))


def test_a_delete_needs_only_the_primary_key():
    key_only = view("u1", None, T0, 10, "DELETE")
    record = parse_change_line(json.dumps(key_only.to_json()))
    assert record.is_deleted and record.payload == {
        "user_id": "u1",
        "article_id": "a1",
        "view_count": None,
        "first_viewed_at": None,
        "last_viewed_at": None,
        "last_impression_id": None,
    }
    without_payload = {k: v for k, v in key_only.to_json().items() if k != "payload"}
    for doc in (without_payload, document(key_only, payload={}), document(key_only, payload=None)):
        with pytest.raises(MalformedChangeRecord, match="DELETE without its primary key"):
            parse_change_line(json.dumps(doc))
    # Only a DELETE may leave the row's columns out.
    with pytest.raises(MalformedChangeRecord, match="view_count is null"):
        parse_change_line(json.dumps(view("u1", None, T0, 11).to_json()))


def test_postgres_lsns_order_numerically():
    assert lsn_number("16/B374D848") == 0x16 << 32 | 0xB374D848
    early = view("u1", 1, T0, 0, "INSERT", lsn="9/FFFFFFFF")
    late = view("u1", 2, T0, 0, lsn="16/0")
    assert sorted([late, early], key=source_order) == [early, late]
    assert "16/0" < "9/FFFFFFFF"  # what text order would have done


def test_views_after_a_delete_and_re_insert_are_counted_and_numbered_on():
    at = [T0 + timedelta(minutes=m) for m in range(6)]
    changes = [
        view("u1", 1, at[0], 1, "INSERT"),
        view("u1", 2, at[1], 2),
        view("u1", None, at[2], 3, "DELETE"),
        view("u1", 1, at[3], 4, "INSERT"),
        view("u1", 3, at[4], 5),  # two views coalesced into one write
    ]
    assert reconstruct_view_events(reversed(changes)) == [
        ViewEvent("u1", "a1", 1, at[0], None),
        ViewEvent("u1", "a1", 2, at[1], None),
        ViewEvent("u1", "a1", 3, at[3], None),
        ViewEvent("u1", "a1", 4, at[4], None),
        ViewEvent("u1", "a1", 5, at[4], None),
    ]


def test_a_spike_in_view_count_makes_no_events_and_loses_none_after_it():
    at = [T0 + timedelta(minutes=m) for m in range(5)]
    changes = [
        view("u1", 1, at[0], 1, "INSERT"),
        view("u1", 2, at[1], 2),
        view("u1", 10**6, at[2], 3),  # a corrupt counter: not a million views
        view("u1", 3, at[3], 4),
        view("u1", 4, at[4], 5),
    ]
    events = reconstruct_view_events(changes)
    assert [(e.view_number, e.viewed_at) for e in events] == [(1, at[0]), (2, at[1]), (3, at[3]), (4, at[4])]
    statuses = {v.record.log_position: v.status for v in view_row_versions(changes)}
    assert statuses == {1: "recorded", 2: "recorded", 3: "rejected_jump", 4: "recorded", 5: "recorded"}

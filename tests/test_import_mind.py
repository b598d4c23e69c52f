"""`newsrec import-mind`: MIND tsv files become landing records; bad rows are counted, not fatal."""

import json
from collections import Counter

from click.testing import CliRunner

from newsrec_assets.cli import main
from newsrec_assets.domain.cdc import parse_change_line
from newsrec_assets.domain.events import reconstruct_view_events
from newsrec_assets.resources.landing import LocalLandingZone
from newsrec_assets.resources.warehouse import DuckDBWarehouse

NEWS = "\n".join(
    [
        "N1\tsports\tsoccer\tCup final goes to extra time\tA tense evening.\thttp://x\t[]\t[]",
        "N2\tnews\tpolitics\tVote delayed again\tLawmakers argue.\thttp://x\t[]\t[]",
        "N3\tfinance\tmarkets\tStocks rally\t\thttp://x\t[]\t[]",
        "broken line without tabs",
    ]
)
BEHAVIORS = "\n".join(
    [
        "1\tU1\t11/11/2019 9:05:58 AM\tN2\tN1-1 N3-0",
        "2\tU1\t11/11/2019 10:15:00 AM\tN2\tN1-1 N9-0 N3-1",  # N9 is unknown: dropped, counted
        "3\tU2\t11/11/2019 11:00:00 AM\t\tN2-0 N3-1",
        "4\tU3\tnot a time\t\tN1-1",  # malformed time
        "5\tU4\t11/11/2019 11:30:00 AM\t\tN1-2",  # malformed label
        "6\tU5\t11/11/2019 11:40:00 AM",  # too few columns
    ]
)


def test_import_mind_writes_landing_records_and_reports_bad_rows(tmp_path):
    (tmp_path / "news.tsv").write_text(NEWS)
    (tmp_path / "behaviors.tsv").write_text(BEHAVIORS)
    landing = tmp_path / "landing"
    result = CliRunner().invoke(
        main,
        [
            "import-mind",
            "--news",
            str(tmp_path / "news.tsv"),
            "--behaviors",
            str(tmp_path / "behaviors.tsv"),
            "--landing",
            str(landing),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["news_malformed"] == 1
    assert report["behavior_rows"] == 6 and report["behavior_malformed"] == 3
    assert report["impressions_with_unknown_news"] == 1 and report["unknown_news_references"] == 1
    assert report["articles_written"] == 3
    assert report["impressions_written"] == 2 + 2 + 2  # N9 left out of impression 2
    assert report["views_written"] == 4 and report["history_views_written"] == 1

    records = [
        parse_change_line(line)
        for file in LocalLandingZone(landing).list_files()
        for line in (landing / file.path).read_text().splitlines()
    ]
    by_table = Counter(record.table for record in records)
    assert by_table == {"articles": 3, "impressions": 6, "user_article_views": 5}
    events = reconstruct_view_events(records)
    # U1 clicked N1 twice (impressions 1 and 2): one in-place row, two view events
    assert [
        (e.user_id, e.article_id, e.view_number, e.impression_id) for e in events if e.user_id == "U1"
    ] == [
        ("U1", "N1", 1, "1"),
        ("U1", "N1", 2, "2"),
        ("U1", "N2", 1, None),  # from the pre-window history
        ("U1", "N3", 1, "2"),
    ]
    report = DuckDBWarehouse(tmp_path / "warehouse.duckdb").ingest(LocalLandingZone(landing))
    assert (report.stored, report.quarantined) == (14, 0)

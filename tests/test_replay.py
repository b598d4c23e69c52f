"""The freshness replay: a closed loop of policies, the simulator's users and the product's ranking code."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import torch

from newsrec_assets.domain.affinity import subcategory_categories
from newsrec_assets.domain.naml import NamlConfig, NamlModel, encode_news_numpy
from newsrec_assets.domain.replay import (
    POLICIES,
    Policy,
    ReplayModel,
    ReplaySettings,
    replay,
    start_from_history,
)
from newsrec_assets.domain.simulator import SimulationConfig, simulate_history
from newsrec_assets.domain.simulator.world import MS_PER_HOUR
from newsrec_assets.domain.training import save_model

TEXT_DIM = 8
END = datetime(2026, 11, 20, 21, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A small simulated history and a small untrained NAML with both terms, saved as serving reads it."""
    history = simulate_history(SimulationConfig(end=END, seed=5, users=150, articles=200, days=3.0))
    taxonomy = history.taxonomy
    config = NamlConfig(
        text_dim=TEXT_DIM,
        news_dim=16,
        text_hidden_dim=16,
        n_categories=taxonomy.n_categories + 1,
        n_subcategories=taxonomy.n_subcategories + 1,
        attention_dim=8,
    )
    torch.manual_seed(0)
    model = NamlModel(config).eval()
    folder = tmp_path_factory.mktemp("model")
    save_model(model, folder)

    def text_vectors(indices: np.ndarray) -> np.ndarray:
        return np.stack([np.random.default_rng(int(i)).normal(size=TEXT_DIM) for i in indices]).astype(
            np.float32
        )

    def news(indices, subcategories):
        categories = taxonomy.subcategory_category[subcategories] + 1
        vectors = text_vectors(indices)
        return encode_news_numpy(model, vectors, vectors, categories, subcategories + 1)

    n = history.articles.count
    existing = (news(np.arange(n), history.articles.subcategory), history.articles.subcategory + 1)
    subcategory_ids = np.arange(taxonomy.n_subcategories + 1)
    categories = np.concatenate([[0], taxonomy.subcategory_category + 1])
    replay_model = ReplayModel.load(
        folder, subcategory_categories(categories, subcategory_ids, len(subcategory_ids))
    )
    index_of = {name: i for i, name in enumerate(taxonomy.subcategories)}

    def encode_articles(rows):
        indices = np.array([int(r["article_id"][1:]) - 1 for r in rows])
        subcategories = np.array([index_of[r["subcategory"]] for r in rows])
        return news(indices, subcategories), subcategories + 1

    world, start = start_from_history(history)
    return world, start, replay_model, existing, encode_articles


def run(setup, **settings):
    world, start, model, existing, encode_articles = setup
    return replay(world, start, model, existing, encode_articles, ReplaySettings(days=1.0, **settings))


@pytest.fixture(scope="module")
def result(setup):
    return run(setup)


@pytest.mark.slow
def test_every_policy_serves_the_same_sessions_and_the_same_seed_gives_the_same_result(setup, result):
    assert list(result.policies) == [p.name for p in POLICIES]
    assert result.sessions > 500 and result.new_articles > 20
    assert result.measure_start_ms % (24 * MS_PER_HOUR) == 4 * MS_PER_HOUR  # from the first 04:00
    assert result.measure_end_ms - result.measure_start_ms == 24 * MS_PER_HOUR
    for outcome in result.policies.values():
        metrics = outcome.metrics
        assert 0 < metrics["ctr"] < 1 and metrics["clicks_per_session"] == pytest.approx(10 * metrics["ctr"])
        assert 0 <= metrics["clicks_on_same_day_articles"] <= 1 and 0 < metrics["catalogue_coverage"] <= 1
        assert metrics["median_clicked_age_hours"] > 0 and len(outcome.hourly_ctr) == 24
    again = run(setup)
    assert again.table() == result.table()
    assert run(setup, seed=1).table() != result.table()


@pytest.mark.slow
def test_batches_follow_the_policy_and_only_speed_policies_update_on_clicks(result):
    daily, half_hourly, speed, fresh = result.policies.values()
    # start 21:10, warm-up to 04:00, one measured day: the first batch, then 04:00 once
    assert daily.batches == 2
    assert half_hourly.batches == speed.batches == fresh.batches == (31 * 60 - 10) // 30 + 1
    assert daily.speed_updates == half_hourly.speed_updates == 0
    assert speed.speed_updates > 100 and fresh.speed_updates > 100


@pytest.mark.slow
def test_fresher_policies_show_more_of_the_day_s_news(result):
    daily, half_hourly, _, fresh = result.policies.values()
    today = "clicks_on_same_day_articles"
    # the daily list only holds articles published before 04:00
    assert half_hourly.metrics[today] > daily.metrics[today]
    assert fresh.metrics[today] > daily.metrics[today]
    assert fresh.metrics["median_clicked_age_hours"] < daily.metrics["median_clicked_age_hours"]


def test_a_daily_policy_is_due_once_a_day_at_its_hour():
    daily = Policy("daily", daily_at_hour=4)
    day = 24 * MS_PER_HOUR
    assert daily.batch_due(None, 0)
    assert not daily.batch_due(5 * MS_PER_HOUR, day + 3 * MS_PER_HOUR)
    assert daily.batch_due(5 * MS_PER_HOUR, day + 4 * MS_PER_HOUR)
    assert Policy("30", batch_every_minutes=30).batch_due(0, 30 * 60_000)

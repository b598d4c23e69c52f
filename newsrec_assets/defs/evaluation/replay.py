"""The freshness replay as a use case: the published model and the simulated app's state, replayed.

Dagster-free, so that the asset (`freshness_replay`) and the CLI (`newsrec replay`) share it. It
reads what the batch layer reads (the published model, the catalogue with its vectors, the
impressions and view events in the warehouse) plus the simulator's ground truth (the world that
continues), and runs `domain.replay.replay`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from newsrec_assets.domain.replay import ReplayResult, ReplaySettings
from newsrec_assets.resources.artifacts import ArtifactStore
from newsrec_assets.resources.warehouse import Warehouse

NAML_KIND = "naml"
TEXT_ENCODER_KIND = "text_encoder"
METRIC_LABELS = {
    "ctr": "CTR",
    "clicks_per_session": "clicks per session",
    "median_clicked_age_hours": "median age of clicked articles (h)",
    "clicks_on_same_day_articles": "clicks on articles published that day",
    "catalogue_coverage": "catalogue coverage",
}


def run_freshness_replay(
    warehouse: Warehouse,
    artifacts: ArtifactStore,
    ground_truth: Path,
    settings: ReplaySettings,
    log=lambda message: None,
) -> tuple[ReplayResult, str]:
    """Every policy replayed from the end of the warehouse's data, and the model version used."""
    from newsrec_assets.defs.model.data import load_catalogue, load_clicks, load_impressions
    from newsrec_assets.domain.affinity import subcategory_categories
    from newsrec_assets.domain.catalogue import encode
    from newsrec_assets.domain.naml import encode_news_numpy
    from newsrec_assets.domain.replay import ReplayModel, ReplayStart, World, replay
    from newsrec_assets.domain.simulator.click_model import CLICK_MODEL_FILE, parse_numbered_ids, to_epoch_ms
    from newsrec_assets.domain.simulator.ground_truth import load_world
    from newsrec_assets.domain.text_encoder import embed_texts, load_encoder
    from newsrec_assets.domain.training import load_model
    from newsrec_assets.domain.user_encoding import load_model_metadata

    if not (ground_truth / CLICK_MODEL_FILE).exists():
        raise FileNotFoundError(f"the replay needs the simulator's ground truth; none in {ground_truth}")
    model_version = artifacts.latest(NAML_KIND)
    encoder_version = artifacts.latest(TEXT_ENCODER_KIND)
    if model_version is None or encoder_version is None:
        raise LookupError("no published model or text encoder yet: materialise published_model first")
    model_folder = artifacts.fetch(NAML_KIND, model_version)
    model = load_model(model_folder)
    extra = load_model_metadata(model_folder)["extra"]
    catalogue = load_catalogue(
        warehouse, category_vocabulary=extra["categories"], subcategory_vocabulary=extra["subcategories"]
    )
    taxonomy, params, users, articles, _ = load_world(ground_truth)
    world = World(taxonomy, params, users, articles)

    features = catalogue.features
    index = parse_numbered_ids(catalogue.article_ids.tolist(), "a", articles.count)
    vectors = np.zeros((articles.count, model.config.news_dim), dtype=np.float32)
    vectors[index] = encode_news_numpy(
        model, features.title_vecs, features.body_vecs, features.cat_ids, features.subcat_ids
    )
    subcategory_ids = np.zeros(articles.count, dtype=np.int64)
    subcategory_ids[index] = features.subcat_ids

    data = load_impressions(warehouse, catalogue)
    clicks = load_clicks(warehouse, catalogue)
    shown_ms = to_epoch_ms(data.log.shown_times)
    viewed = clicks.article_rows >= 0
    start = ReplayStart(
        start_ms=int(max(shown_ms.max(), to_epoch_ms(clicks.viewed_at).max())) + 1,
        impression_users=parse_numbered_ids(data.log.user_ids.tolist(), "u", users.count),
        impression_articles=index[data.log.article_rows],
        impression_ms=shown_ms,
        impression_clicked=np.asarray(data.log.clicked, dtype=bool),
        view_users=parse_numbered_ids(clicks.user_ids[viewed].tolist(), "u", users.count),
        view_articles=index[clicks.article_rows[viewed]],
        view_ms=to_epoch_ms(clicks.viewed_at[viewed]),
    )
    replay_model = ReplayModel.load(
        model_folder,
        subcategory_categories(features.cat_ids, features.subcat_ids, len(catalogue.subcategories) + 1),
    )
    encoder, tokenizer = load_encoder(artifacts.fetch(TEXT_ENCODER_KIND, encoder_version))

    def encode_articles(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """New articles as the fresh-article sensor vectorises them: text encoder, then NAML."""
        titles = embed_texts(encoder, tokenizer, [r["title"] for r in rows], max_length=32)
        bodies = embed_texts(encoder, tokenizer, [r["body"] for r in rows], max_length=128)
        subcategories = encode([r["subcategory"] for r in rows], catalogue.subcategories)
        categories = encode([r["category"] for r in rows], catalogue.categories)
        return encode_news_numpy(model, titles, bodies, categories, subcategories), subcategories

    result = replay(
        world, start, replay_model, (vectors, subcategory_ids), encode_articles, settings, log=log
    )
    return result, model_version


def replay_table(result: ReplayResult) -> str:
    """The policies' metrics as a markdown table (rows = policies)."""
    header = "| policy | " + " | ".join(METRIC_LABELS.values()) + " |"
    lines = [header, "|---" * (len(METRIC_LABELS) + 1) + "|"]
    for name, outcome in result.policies.items():
        m = outcome.metrics
        cells = [
            f"{m['ctr']:.4f}",
            f"{m['clicks_per_session']:.3f}",
            f"{m['median_clicked_age_hours']:.1f}",
            f"{m['clicks_on_same_day_articles']:.3f}",
            f"{m['catalogue_coverage']:.3f}",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replay_figure(result: ReplayResult):
    """Hourly CTR per policy over the measured days, and the policies' metrics side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (timeline, bars) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    start = datetime.fromtimestamp(result.measure_start_ms / 1000, tz=UTC)
    for name, outcome in result.policies.items():
        hours = np.arange(len(outcome.hourly_ctr))
        # a centred 3-hour mean (fewer hours at the ends): an hour of one policy holds ~700 sessions
        kernel = np.ones(3)
        smooth = np.convolve(outcome.hourly_ctr, kernel, mode="same") / np.convolve(
            np.ones(len(hours)), kernel, mode="same"
        )
        timeline.plot(hours, smooth, label=name)
    timeline.set(
        xlabel=f"hours since {start:%Y-%m-%d %H:%M} UTC",
        ylabel="CTR (3-hour mean)",
        title="Served lists' click-through rate",
    )
    timeline.grid(alpha=0.3)
    timeline.legend(fontsize=7)
    metrics = ["ctr", "clicks_on_same_day_articles", "catalogue_coverage"]
    names = list(result.policies)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [
            result.policies[name].metrics[m] / max(result.policies[n].metrics[m] for n in names)
            for m in metrics
        ]
        bars.bar(np.arange(len(metrics)) + i * width, values, width=width, label=name)
    short = {
        "ctr": "CTR",
        "clicks_on_same_day_articles": "clicks on the day's news",
        "catalogue_coverage": "coverage",
    }
    bars.set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, [short[m] for m in metrics], fontsize=8)
    bars.set(title="relative to the best policy", ylim=(0, 1.05))
    bars.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure

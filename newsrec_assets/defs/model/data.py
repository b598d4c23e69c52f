"""Reading the feature marts and article vectors into the arrays the domain code works on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from newsrec_assets.domain.catalogue import Catalogue
from newsrec_assets.domain.popularity import context_features
from newsrec_assets.domain.sharding import Shard
from newsrec_assets.domain.training import ImpressionLog
from newsrec_assets.resources.warehouse import Warehouse


def vectors(column: pa.ChunkedArray) -> np.ndarray:
    """A list column of equally long float vectors as a [rows, dim] float32 matrix."""
    if column.num_chunks == 0 or len(column) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    combined = column.combine_chunks()
    return combined.flatten().to_numpy().astype(np.float32).reshape(len(combined), -1)


def load_catalogue(
    warehouse: Warehouse,
    live_only: bool = False,
    category_vocabulary: list[str] | None = None,
    subcategory_vocabulary: list[str] | None = None,
) -> Catalogue:
    """Current articles that have vectors from the current encoder, as a catalogue."""
    table = warehouse.embedded_articles(live_only=live_only)
    return Catalogue.build(
        article_ids=table["article_id"].to_pylist(),
        published_at=table["published_at"].to_numpy(),
        title_vecs=vectors(table["title_vector"]),
        body_vecs=vectors(table["body_vector"]),
        categories=table["category"].to_pylist(),
        subcategories=table["subcategory"].to_pylist(),
        category_vocabulary=category_vocabulary,
        subcategory_vocabulary=subcategory_vocabulary,
    )


@dataclass
class ClickLog:
    """Reconstructed view events, each with the catalogue row of its article (-1 if unknown)."""

    user_ids: np.ndarray
    article_ids: np.ndarray
    article_rows: np.ndarray
    viewed_at: np.ndarray  # datetime64[us]

    @property
    def newest(self) -> np.datetime64 | None:
        return self.viewed_at.max() if len(self.viewed_at) else None


def load_clicks(warehouse: Warehouse, catalogue: Catalogue) -> ClickLog:
    table = warehouse.view_events()
    article_ids = np.asarray(table["article_id"].to_pylist(), dtype=object)
    return ClickLog(
        user_ids=np.asarray(table["user_id"].to_pylist(), dtype=object),
        article_ids=article_ids,
        article_rows=catalogue.rows(article_ids.tolist()),
        viewed_at=table["viewed_at"].to_numpy().astype("datetime64[us]"),
    )


@dataclass
class Impressions:
    log: ImpressionLog
    article_ids: np.ndarray
    positions: np.ndarray
    clicked_at: np.ndarray  # datetime64[us], NaT where not clicked
    dropped_unknown_articles: int


def load_impressions(warehouse: Warehouse, catalogue: Catalogue) -> Impressions:
    """Training impressions whose article is in the catalogue (deleted articles have no vectors)."""
    table = warehouse.training_impressions()
    article_ids = np.asarray(table["article_id"].to_pylist(), dtype=object)
    rows = catalogue.rows(article_ids.tolist())
    keep = rows >= 0
    return Impressions(
        log=ImpressionLog(
            impression_ids=np.asarray(table["impression_id"].to_pylist(), dtype=object)[keep],
            user_ids=np.asarray(table["user_id"].to_pylist(), dtype=object)[keep],
            shown_times=table["shown_at"].to_numpy().astype("datetime64[us]")[keep],
            article_rows=rows[keep],
            clicked=np.asarray(table["clicked"].to_pylist(), dtype=bool)[keep],
            split=np.asarray(table["split"].to_pylist(), dtype=object)[keep],
        ),
        article_ids=article_ids[keep],
        positions=np.asarray(table["position"].to_pylist(), dtype=np.int64)[keep],
        clicked_at=table["first_clicked_at"].to_numpy().astype("datetime64[us]")[keep],
        dropped_unknown_articles=int((~keep).sum()),
    )


def impression_prior_features(impressions: Impressions, catalogue: Catalogue) -> np.ndarray:
    """Raw popularity-prior features of every impression row's article at the row's time.

    ``[age_hours, clicks, impressions]`` (``popularity.context_features``): the exposures are the
    impression rows themselves (train and validation alike), the clicks their first clicks at the
    time they happened; only events strictly before each row count. float32 [n_rows, 3].
    """
    log = impressions.log
    rows = np.asarray(log.article_rows, dtype=np.int64)
    clicked = np.asarray(log.clicked, dtype=bool) & ~np.isnat(impressions.clicked_at)
    return context_features(
        article_keys=rows,
        times=log.shown_times,
        published_at=catalogue.published_at[rows],
        impression_keys=rows,
        impression_times=log.shown_times,
        click_keys=rows[clicked],
        click_times=impressions.clicked_at[clicked],
    )


def impression_affinity_features(impressions: Impressions, catalogue: Catalogue) -> np.ndarray:
    """Raw affinity features of every impression row: its user's counts in its article's topics.

    ``affinity.RAW_FEATURES``: the user's impressions and clicks in the row article's subcategory,
    in its category and overall, strictly before the row's time. The exposures are the impression
    rows themselves (every window alike), the clicks their first clicks when they happened.
    float32 [n_rows, 6].
    """
    from newsrec_assets.domain.affinity import context_features, subcategory_categories

    log = impressions.log
    features = catalogue.features
    subcategories = np.asarray(features.subcat_ids, dtype=np.int64)[log.article_rows]
    clicked = np.asarray(log.clicked, dtype=bool) & ~np.isnat(impressions.clicked_at)
    return context_features(
        user_keys=log.user_ids,
        subcategory_ids=subcategories,
        times=log.shown_times,
        impression_user_keys=log.user_ids,
        impression_subcategory_ids=subcategories,
        impression_times=log.shown_times,
        click_user_keys=log.user_ids[clicked],
        click_subcategory_ids=subcategories[clicked],
        click_times=impressions.clicked_at[clicked],
        categories=subcategory_categories(
            features.cat_ids, features.subcat_ids, len(catalogue.subcategories) + 1
        ),
    )


def user_subcategory_counts(warehouse: Warehouse, shard: Shard | None = None) -> pa.Table:
    """Every user's impressions and clicks per subcategory so far.

    Columns `user_id, subcategory, impressions, clicks`.

    Impressions of articles no longer current (deleted) are left out, as training leaves them out.
    """
    return warehouse.user_subcategory_counts(shard)


def user_affinity_counts(
    warehouse: Warehouse, catalogue: Catalogue, user_ids: np.ndarray, shard: Shard | None = None
) -> np.ndarray:
    """Raw affinity features of every (user, subcategory id) pair now, for `user_ids` in that order.

    float32 [len(user_ids), n_subcategories, 6] (``affinity.user_counts``); subcategory ids are the
    catalogue's (the model's vocabulary), users without impressions get zeros.
    """
    from newsrec_assets.domain.affinity import subcategory_categories, user_counts
    from newsrec_assets.domain.catalogue import encode

    counts = user_subcategory_counts(warehouse, shard)
    row_of = {user: i for i, user in enumerate(np.asarray(user_ids).tolist())}
    codes = np.fromiter((row_of.get(u, -1) for u in counts["user_id"].to_pylist()), dtype=np.int64)
    known = codes >= 0
    features = catalogue.features
    return user_counts(
        user_codes=codes[known],
        subcategory_ids=encode(counts["subcategory"].to_pylist(), catalogue.subcategories)[known],
        impressions=counts["impressions"].to_numpy()[known],
        clicks=counts["clicks"].to_numpy()[known],
        n_users=len(row_of),
        categories=subcategory_categories(
            features.cat_ids, features.subcat_ids, len(catalogue.subcategories) + 1
        ),
    )

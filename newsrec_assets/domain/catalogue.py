"""The article catalogue as the model sees it: one row per article, with ids mapped to rows.

Pure numpy: it turns columns read from the warehouse into the arrays NAML and the ranking code
index by row, and keeps the category vocabularies that a trained model was built with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from newsrec_assets.domain.training import ArticleFeatures


def build_vocabulary(values: Sequence[str]) -> list[str]:
    """Sorted distinct values; a value's id is its index + 1 (0 = unknown)."""
    return sorted({value for value in values if value})


def encode(values: Sequence[str], vocabulary: Sequence[str]) -> np.ndarray:
    index = {value: i + 1 for i, value in enumerate(vocabulary)}
    return np.fromiter((index.get(value, 0) for value in values), dtype=np.int64, count=len(values))


@dataclass
class Catalogue:
    """Articles by row: ids, publication times and the model's input features."""

    article_ids: np.ndarray  # n_articles (object: str)
    published_at: np.ndarray  # n_articles, datetime64[us]
    features: ArticleFeatures
    categories: list[str]
    subcategories: list[str]

    def __post_init__(self) -> None:
        self._row_of = {article_id: row for row, article_id in enumerate(self.article_ids.tolist())}

    def __len__(self) -> int:
        return len(self.article_ids)

    def rows(self, article_ids: Sequence[str]) -> np.ndarray:
        """Row of each article id, -1 for ids not in the catalogue."""
        row_of = self._row_of
        return np.fromiter((row_of.get(a, -1) for a in article_ids), dtype=np.int64, count=len(article_ids))

    @classmethod
    def build(
        cls,
        article_ids: Sequence[str],
        published_at: np.ndarray,
        title_vecs: np.ndarray,
        body_vecs: np.ndarray,
        categories: Sequence[str],
        subcategories: Sequence[str],
        category_vocabulary: Sequence[str] | None = None,
        subcategory_vocabulary: Sequence[str] | None = None,
    ) -> Catalogue:
        """From columns; pass a model's vocabularies to encode categories exactly as it was trained."""
        category_vocabulary = list(category_vocabulary or build_vocabulary(categories))
        subcategory_vocabulary = list(subcategory_vocabulary or build_vocabulary(subcategories))
        return cls(
            article_ids=np.asarray(article_ids, dtype=object),
            published_at=np.asarray(published_at, dtype="datetime64[us]"),
            features=ArticleFeatures(
                title_vecs=np.asarray(title_vecs, dtype=np.float32),
                body_vecs=np.asarray(body_vecs, dtype=np.float32),
                cat_ids=encode(categories, category_vocabulary),
                subcat_ids=encode(subcategories, subcategory_vocabulary),
            ),
            categories=category_vocabulary,
            subcategories=subcategory_vocabulary,
        )

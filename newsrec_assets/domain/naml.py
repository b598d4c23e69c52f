"""NAML: Neural News Recommendation with Attentive Multi-View Learning (Wu et al., 2019).

Adapted from arXiv 1907.05576 to our setting:

- The title and body views start from precomputed sentence vectors of the (contrastively
  fine-tuned) BERT encoder instead of word embeddings + CNN + word attention; a small MLP per view
  projects them to the news dimension ``d``. Embedding the text once in the batch layer keeps NAML
  training and serving cheap on CPUs.
- Category and subcategory views are learned embeddings (index 0 = unknown) with a dense ReLU
  layer to ``d``, as in the paper.
- View-level additive attention combines the four view vectors into the news vector.
- The user encoder is additive attention over up to ``max_history`` clicked news vectors, with a
  padding mask; the click predictor is the dot product of user and news vectors.

``NewsEncoder`` and ``UserEncoder`` are separate modules so that the batch layer can precompute
news vectors and the speed layer can encode users in numpy (``user_encoder_numpy_params`` +
``user_encoding.encode_users_numpy``).

Optionally (``NamlConfig.use_prior``, on by default) a ``PopularityPrior`` adds a per-(article, time)
score from the article's age and click-through rate so far, as in PP-Rec (Qi et al., 2021):
``score = user . news + prior(article, t)``. It has a numpy twin (``prior_numpy_params`` +
``popularity.prior_scores``); see ``popularity`` for the features and how serving folds the prior
into the dot product.

Optionally too (``NamlConfig.use_affinity``, on by default) a ``SubcategoryAffinity`` adds an
exposure-aware user x subcategory term: a small MLP over how often the user clicked what they
were shown of the article's subcategory and category (``affinity``, which also holds its numpy
twin and the folding into the dot product).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from newsrec_assets.domain import affinity as affinity_features

__all__ = [
    "AFFINITY_CONFIG_KEYS",
    "PRIOR_CONFIG_KEYS",
    "AdditiveAttention",
    "NamlConfig",
    "NamlModel",
    "NewsEncoder",
    "PopularityPrior",
    "SubcategoryAffinity",
    "affinity_numpy_params",
    "UserEncoder",
    "encode_news_numpy",
    "prior_numpy_params",
    "user_encoder_numpy_params",
]

# NamlConfig fields that only matter with the prior (left out of a prior-less model's version hash)
PRIOR_CONFIG_KEYS = ("use_prior", "prior_hidden_dim", "prior_ctr_strength")
# ... and those that only matter with the affinity term
AFFINITY_CONFIG_KEYS = ("use_affinity", "affinity_hidden_dim", "affinity_strength")


@dataclass(frozen=True)
class NamlConfig:
    """Hyper-parameters of the NAML model (all sizes, no data)."""

    text_dim: int = 384  # size of the precomputed title/body vectors
    news_dim: int = 128  # d: size of news and user vectors
    text_hidden_dim: int = 256  # hidden layer of the title/body projection MLPs
    n_categories: int = 64  # embedding rows, index 0 = unknown
    n_subcategories: int = 256  # embedding rows, index 0 = unknown
    category_emb_dim: int = 32
    attention_dim: int = 64  # hidden size of the additive attention layers
    dropout: float = 0.2
    max_history: int = 50
    use_prior: bool = True  # add the popularity/recency prior to the dot product
    prior_hidden_dim: int = 16  # hidden units of the prior's MLP
    prior_ctr_strength: float = 10.0  # pseudo-impressions smoothing each article's CTR to the mean
    use_affinity: bool = True  # add the exposure-aware user x subcategory affinity term
    affinity_hidden_dim: int = 16  # hidden units of the affinity term's MLP
    affinity_strength: float = 5.0  # pseudo-impressions shrinking a topic's CTR towards the user's

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NamlConfig:
        """Inverse of ``to_dict``; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class AdditiveAttention(nn.Module):
    """Additive attention pooling: ``softmax_i(q . tanh(W v_i + b))`` weighted sum of ``v_i``.

    Masked positions get exactly zero weight, so padding (whatever its content) never changes the
    result; a row with no unmasked position pools to zero.
    """

    def __init__(self, dim: int, attention_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, attention_dim)
        self.query = nn.Parameter(torch.empty(attention_dim).uniform_(-0.1, 0.1))

    def forward(self, vectors: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """vectors: [batch, n, dim], mask: [batch, n] (bool) -> [batch, dim]."""
        logits = torch.tanh(self.proj(vectors)) @ self.query  # batch, n
        if mask is None:
            mask = torch.ones_like(logits, dtype=torch.bool)
        mask = mask.bool()
        logits = logits.masked_fill(~mask, -1e30)
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()
        weights = torch.exp(logits) * mask  # batch, n
        weights = weights / (weights.sum(dim=1, keepdim=True) + 1e-12)
        return torch.einsum("bn,bnd->bd", weights, vectors)  # batch, dim


def _text_mlp(config: NamlConfig) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(config.dropout),
        nn.Linear(config.text_dim, config.text_hidden_dim),
        nn.ReLU(),
        nn.Dropout(config.dropout),
        nn.Linear(config.text_hidden_dim, config.news_dim),
        nn.ReLU(),
    )


class NewsEncoder(nn.Module):
    """Title, body, category and subcategory views combined by view-level attention."""

    def __init__(self, config: NamlConfig) -> None:
        super().__init__()
        self.config = config
        self.title = _text_mlp(config)
        self.body = _text_mlp(config)
        self.category_emb = nn.Embedding(config.n_categories, config.category_emb_dim)
        self.subcategory_emb = nn.Embedding(config.n_subcategories, config.category_emb_dim)
        self.category = nn.Sequential(nn.Linear(config.category_emb_dim, config.news_dim), nn.ReLU())
        self.subcategory = nn.Sequential(nn.Linear(config.category_emb_dim, config.news_dim), nn.ReLU())
        self.dropout = nn.Dropout(config.dropout)
        self.view_attention = AdditiveAttention(config.news_dim, config.attention_dim)

    def forward(
        self,
        title_vecs: torch.Tensor,
        body_vecs: torch.Tensor,
        cat_ids: torch.Tensor,
        subcat_ids: torch.Tensor,
    ) -> torch.Tensor:
        """[n, text_dim] x2, [n] x2 -> [n, news_dim]. Ids outside the vocabulary map to 0 (unknown)."""
        cat_ids = _known_ids(cat_ids, self.config.n_categories)
        subcat_ids = _known_ids(subcat_ids, self.config.n_subcategories)
        views = torch.stack(
            [
                self.title(title_vecs),  # n, dim
                self.body(body_vecs),  # n, dim
                self.category(self.dropout(self.category_emb(cat_ids))),  # n, dim
                self.subcategory(self.dropout(self.subcategory_emb(subcat_ids))),  # n, dim
            ],
            dim=1,
        )  # n, 4, dim
        return self.view_attention(views)  # n, dim


def _known_ids(ids: torch.Tensor, n: int) -> torch.Tensor:
    ids = ids.long()
    return torch.where((ids >= 0) & (ids < n), ids, torch.zeros_like(ids))


class UserEncoder(nn.Module):
    """Additive attention over the user's clicked news vectors (with a padding mask)."""

    def __init__(self, config: NamlConfig) -> None:
        super().__init__()
        self.attention = AdditiveAttention(config.news_dim, config.attention_dim)

    def forward(self, history_news_vecs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """[batch, H, dim], [batch, H] -> [batch, dim]; users without clicks get zeros."""
        return self.attention(history_news_vecs, mask)


class ContextHead(nn.Module):
    """An additive click score from a few context facts: model features, standardised, then an MLP.

    ``model_features`` (per subclass) turns raw counts into the features; ``fit_statistics`` sets
    the buffers (the training CTR the counts are shrunk towards, and the standardisation) from
    training rows, so the weights file is complete. ``Linear -> ReLU -> Linear``; the output layer
    starts at zero, so the term adds nothing until it learns.
    """

    n_features: int

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.register_buffer("ctr_mean", torch.tensor(0.1))
        self.register_buffer("feature_mean", torch.zeros(self.n_features))
        self.register_buffer("feature_std", torch.ones(self.n_features))
        self.hidden = nn.Linear(self.n_features, hidden_dim)
        self.out = nn.Linear(hidden_dim, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def model_features(self, raw: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def fit_statistics(self, raw: torch.Tensor, ctr_mean: float) -> None:
        """Set the shrinkage target and the standardisation from training rows' raw features [n, f]."""
        self.ctr_mean.fill_(float(ctr_mean))
        features = self.model_features(torch.as_tensor(raw))  # n, n_features
        self.feature_mean.copy_(features.mean(dim=0))
        self.feature_std.copy_(features.std(dim=0).clamp_min(1e-3))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """[..., f] raw features -> [...] additive click scores."""
        z = (self.model_features(raw) - self.feature_mean) / self.feature_std  # ..., n_features
        return self.out(torch.relu(self.hidden(z))).squeeze(-1)  # ...


class PopularityPrior(ContextHead):
    """Per-(article, time) click score from the article's age and CTR so far (PP-Rec style).

    Input: raw features ``[age_hours, clicks, impressions]`` (``popularity.context_features``).
    They become ``[log1p(age), logit(smoothed CTR), log1p(impressions)]``, the CTR smoothed
    towards the training CTR with ``prior_ctr_strength`` pseudo-impressions.
    """

    n_features = 3

    def __init__(self, config: NamlConfig) -> None:
        super().__init__(config.prior_hidden_dim)
        self.ctr_strength = float(config.prior_ctr_strength)

    def model_features(self, raw: torch.Tensor) -> torch.Tensor:
        """[..., 3] raw -> [..., 3] ``[log1p(age), logit(smoothed ctr), log1p(impressions)]``."""
        raw = raw.float().clamp_min(0.0)
        age, clicks, impressions = raw.unbind(-1)
        ctr = (clicks + self.ctr_strength * self.ctr_mean) / (impressions + self.ctr_strength)
        ctr = ctr.clamp(1e-6, 1.0 - 1e-6)
        logit_ctr = torch.log(ctr) - torch.log1p(-ctr)
        return torch.stack([torch.log1p(age), logit_ctr, torch.log1p(impressions)], dim=-1)  # ..., 3


class SubcategoryAffinity(ContextHead):
    """Exposure-aware user x subcategory click score (the features are ``affinity``'s).

    Input: raw counts ``affinity.RAW_FEATURES`` of the user's impressions and clicks in the
    article's subcategory, its category and overall, before the moment; ``affinity.model_features``
    (numpy, the one implementation serving uses too) shrinks them into CTR logits.
    """

    n_features = len(affinity_features.MODEL_FEATURES)

    def __init__(self, config: NamlConfig) -> None:
        super().__init__(config.affinity_hidden_dim)
        self.strength = float(config.affinity_strength)

    def model_features(self, raw: torch.Tensor) -> torch.Tensor:
        """[..., 6] raw counts -> [..., 5] ``affinity.MODEL_FEATURES`` (no gradient flows to counts)."""
        features = affinity_features.model_features(
            np.asarray(raw.detach().cpu().numpy()), float(self.ctr_mean), self.strength
        )
        return torch.as_tensor(features)


class NamlModel(nn.Module):
    """NAML: news encoder, user encoder, dot-product click predictor, (optional) prior and affinity."""

    def __init__(self, config: NamlConfig | None = None) -> None:
        super().__init__()
        self.config = config or NamlConfig()
        self.news_encoder = NewsEncoder(self.config)
        self.user_encoder = UserEncoder(self.config)
        self.prior = PopularityPrior(self.config) if self.config.use_prior else None
        self.affinity = SubcategoryAffinity(self.config) if self.config.use_affinity else None

    def encode_news(
        self,
        title_vecs: torch.Tensor,
        body_vecs: torch.Tensor,
        cat_ids: torch.Tensor,
        subcat_ids: torch.Tensor,
    ) -> torch.Tensor:
        """News vectors [n, dim] from [n, text_dim] title/body vectors and [n] category ids."""
        return self.news_encoder(title_vecs, body_vecs, cat_ids, subcat_ids)

    def encode_user(self, history_news_vecs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """User vectors [batch, dim] from clicked news vectors [batch, H, dim] and mask [batch, H]."""
        return self.user_encoder(history_news_vecs, mask)

    def prior_score(self, prior_features: torch.Tensor) -> torch.Tensor:
        """Additive prior per (article, time): raw features [..., 3] -> [...]."""
        if self.prior is None:
            raise ValueError("this model has no prior (NamlConfig.use_prior is False)")
        return self.prior(prior_features)

    def context_score(
        self, prior_features: np.ndarray | None = None, affinity_features: np.ndarray | None = None
    ) -> torch.Tensor | None:
        """The additive terms of some rows: prior (raw [..., 3]) + affinity (raw [..., 6]), or None.

        Each term counts when the model has it, and then its features are required.
        """
        total = None
        for head, raw, name in (
            (self.prior, prior_features, "prior_features"),
            (self.affinity, affinity_features, "affinity_features"),
        ):
            if head is None:
                continue
            if raw is None:
                raise ValueError(f"this model has a {type(head).__name__}: pass {name}")
            term = head(torch.as_tensor(np.asarray(raw, dtype=np.float32)))
            total = term if total is None else total + term
        return total

    @staticmethod
    def score(
        user_vecs: torch.Tensor, news_vecs: torch.Tensor, prior: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Dot-product click scores, plus the candidates' prior scores when given.

        ``user_vecs`` [batch, dim] with ``news_vecs`` [batch, C, dim] (per-user candidates) gives
        [batch, C]; with ``news_vecs`` [n, dim] (shared candidates) gives [batch, n]. ``prior``
        ([batch, C] or [n], from ``prior_score``) is added to each candidate's score.
        """
        if news_vecs.dim() == 3:
            scores = torch.einsum("bd,bcd->bc", user_vecs, news_vecs)  # batch, C
        else:
            scores = user_vecs @ news_vecs.T  # batch, n
        return scores if prior is None else scores + prior

    def forward(
        self,
        title_vecs: torch.Tensor,
        body_vecs: torch.Tensor,
        cat_ids: torch.Tensor,
        subcat_ids: torch.Tensor,
        candidate_idx: torch.Tensor,
        history_idx: torch.Tensor,
        history_mask: torch.Tensor,
        candidate_prior_features: torch.Tensor | None = None,
        candidate_affinity_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training forward pass over a batch that shares one table of articles.

        Args:
            title_vecs, body_vecs, cat_ids, subcat_ids: features of the U distinct articles that the
                batch touches ([U, text_dim] x2, [U] x2), encoded once.
            candidate_idx: [batch, 1 + K] indices into those U articles.
            history_idx: [batch, H] indices into those U articles (any valid index at padding).
            history_mask: [batch, H] true for real clicks.
            candidate_prior_features: [batch, 1 + K, 3] raw prior features of each candidate at
                the impression's time; required when the model has a prior, ignored otherwise.
            candidate_affinity_features: [batch, 1 + K, 6] raw affinity features
                (``affinity.context_features``) of each candidate's user and subcategory at the
                impression's time; required when the model has the affinity term.

        Returns:
            logits [batch, 1 + K].
        """
        news = self.encode_news(title_vecs, body_vecs, cat_ids, subcat_ids)  # U, dim
        candidates = news[candidate_idx]  # batch, 1 + K, dim
        history = news[history_idx]  # batch, H, dim
        users = self.encode_user(history, history_mask)  # batch, dim
        prior = None
        if self.prior is not None:
            if candidate_prior_features is None:
                raise ValueError("a model with a prior needs candidate_prior_features")
            prior = self.prior(candidate_prior_features)  # batch, 1 + K
        if self.affinity is not None:
            if candidate_affinity_features is None:
                raise ValueError("a model with the affinity term needs candidate_affinity_features")
            term = self.affinity(candidate_affinity_features)  # batch, 1 + K
            prior = term if prior is None else prior + term
        return self.score(users, candidates, prior)  # batch, 1 + K


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float32).copy()


def user_encoder_numpy_params(model: NamlModel) -> dict[str, np.ndarray]:
    """The user encoder's weights as float32 arrays for ``user_encoding.encode_users_numpy``."""
    attention = model.user_encoder.attention
    return {
        "proj_weight": _array(attention.proj.weight),  # att, dim
        "proj_bias": _array(attention.proj.bias),  # att
        "query": _array(attention.query),  # att
    }


def _head_params(head: ContextHead) -> dict[str, np.ndarray]:
    return {
        "ctr_mean": _array(head.ctr_mean),  # scalar
        "feature_mean": _array(head.feature_mean),  # features
        "feature_std": _array(head.feature_std),  # features
        "hidden_weight": _array(head.hidden.weight),  # hidden, features
        "hidden_bias": _array(head.hidden.bias),  # hidden
        "out_weight": _array(head.out.weight)[0],  # hidden
        "out_bias": _array(head.out.bias)[0],  # scalar
    }


def prior_numpy_params(model: NamlModel) -> dict[str, np.ndarray]:
    """The prior's weights as float32 arrays for ``popularity.prior_scores`` (``PARAM_NAMES``)."""
    if model.prior is None:
        raise ValueError("this model has no prior (NamlConfig.use_prior is False)")
    return {
        **_head_params(model.prior),
        "ctr_strength": np.asarray(model.prior.ctr_strength, dtype=np.float32),
    }


def affinity_numpy_params(model: NamlModel) -> dict[str, np.ndarray]:
    """The affinity term's weights as float32 arrays for ``affinity.affinity_scores`` (``PARAM_NAMES``)."""
    if model.affinity is None:
        raise ValueError("this model has no affinity term (NamlConfig.use_affinity is False)")
    return {**_head_params(model.affinity), "strength": np.asarray(model.affinity.strength, dtype=np.float32)}


def encode_news_numpy(
    model: NamlModel,
    title_vecs: np.ndarray,
    body_vecs: np.ndarray,
    cat_ids: np.ndarray,
    subcat_ids: np.ndarray,
    batch_size: int = 4096,
) -> np.ndarray:
    """News vectors for a whole catalogue in eval mode: numpy in, float32 [n, dim] out."""
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for start in range(0, len(cat_ids), batch_size):
                end = start + batch_size
                out.append(
                    model.encode_news(
                        torch.as_tensor(np.asarray(title_vecs[start:end], dtype=np.float32)),
                        torch.as_tensor(np.asarray(body_vecs[start:end], dtype=np.float32)),
                        torch.as_tensor(np.asarray(cat_ids[start:end], dtype=np.int64)),
                        torch.as_tensor(np.asarray(subcat_ids[start:end], dtype=np.int64)),
                    ).numpy()
                )
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, model.config.news_dim), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)

"""NAML's user encoder in plain numpy, for the speed layer and serving.

The speed layer recomputes one user's list per view event. It must not import torch (slow to
start, heavy), so the trained user encoder, which is a single additive-attention layer over the
user's clicked news vectors, is exported as a handful of arrays (``naml.user_encoder_numpy_params``)
and evaluated here. News vectors come precomputed from the batch layer.

This module imports numpy only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

USER_ENCODER_FILE = "user_encoder.npz"
MODEL_CONFIG_FILE = "config.json"  # written by training.save_model next to the weights
PARAM_NAMES = ("proj_weight", "proj_bias", "query")

__all__ = [
    "MODEL_CONFIG_FILE",
    "USER_ENCODER_FILE",
    "additive_attention_numpy",
    "encode_users_numpy",
    "load_model_metadata",
    "load_user_encoder_params",
    "save_user_encoder_params",
    "score_numpy",
]


def additive_attention_numpy(
    params: dict[str, np.ndarray], vectors: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """Additive attention pooling, the numpy twin of ``naml.AdditiveAttention``.

    ``logit_i = query . tanh(W v_i + b)``; weights are the softmax of the logits over the unmasked
    positions; the result is the weighted sum of the vectors. A row whose positions are all masked
    pools to the zero vector.

    Args:
        params: ``proj_weight`` [att, dim], ``proj_bias`` [att], ``query`` [att].
        vectors: [batch, n, dim].
        mask: [batch, n], true/1 for real positions; ``None`` means all real.
    """
    vectors = np.asarray(vectors, dtype=np.float32)  # batch, n, dim
    if mask is None:
        mask = np.ones(vectors.shape[:2], dtype=bool)
    mask = np.asarray(mask).astype(bool)  # batch, n
    hidden = np.tanh(vectors @ params["proj_weight"].T + params["proj_bias"])  # batch, n, att
    logits = hidden @ params["query"]  # batch, n
    logits = np.where(mask, logits, np.float32(-1e30))
    logits = logits - logits.max(axis=1, keepdims=True)
    weights = np.exp(logits) * mask  # batch, n
    weights = weights / (weights.sum(axis=1, keepdims=True) + np.float32(1e-12))
    return np.einsum("bn,bnd->bd", weights.astype(np.float32), vectors)  # batch, dim


def encode_users_numpy(
    params: dict[str, np.ndarray], history_vecs: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """User vectors from clicked-news vectors, matching ``NamlModel.encode_user`` to ~1e-6.

    Args:
        params: from ``naml.user_encoder_numpy_params`` or ``load_user_encoder_params``.
        history_vecs: [batch, H, dim] news vectors of the clicked articles (padding anywhere).
        mask: [batch, H] true for real clicks. Users with no clicks get the zero vector.

    Returns:
        float32 [batch, dim].
    """
    history_vecs = np.asarray(history_vecs, dtype=np.float32)
    if history_vecs.ndim != 3:
        raise ValueError(f"history_vecs must be [batch, H, dim], got shape {history_vecs.shape}")
    return additive_attention_numpy(params, history_vecs, mask).astype(np.float32)


def score_numpy(user_vecs: np.ndarray, news_vecs: np.ndarray) -> np.ndarray:
    """Click scores by dot product: [batch, dim] x [n, dim] -> [batch, n]."""
    return np.asarray(user_vecs, dtype=np.float32) @ np.asarray(news_vecs, dtype=np.float32).T


def save_user_encoder_params(params: dict[str, np.ndarray], folder: str | Path) -> Path:
    """Write the user-encoder arrays to ``<folder>/user_encoder.npz``; returns the file path."""
    path = Path(folder) / USER_ENCODER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{name: np.asarray(params[name], dtype=np.float32) for name in PARAM_NAMES})
    return path


def load_user_encoder_params(folder_or_file: str | Path) -> dict[str, np.ndarray]:
    """Read the arrays written by ``save_user_encoder_params`` (a model folder or the .npz itself)."""
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / USER_ENCODER_FILE
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name].astype(np.float32) for name in PARAM_NAMES}


def load_model_metadata(folder: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a saved NAML model (``version``, ``naml_config``, ``extra``), no torch."""
    return json.loads((Path(folder) / MODEL_CONFIG_FILE).read_text())

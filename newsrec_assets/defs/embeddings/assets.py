"""Embeddings: a contrastively fine-tuned BERT text encoder, and article title/body vectors."""

import tempfile
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa

from newsrec_assets.defs.ingestion.assets import WAREHOUSE_WRITER_POOL
from newsrec_assets.defs.plots import line_plot
from newsrec_assets.defs.resources import ArtifactStoreResource, WarehouseResource
from newsrec_assets.settings import warehouse_kind

GROUP = "embeddings"
TEXT_ENCODER_KIND = "text_encoder"


class TextEncoderConfig(dg.Config):
    """How the text encoder is fine-tuned. `base_model_path` empty = the packaged MiniLM."""

    base_model_path: str = ""
    time_budget_seconds: float = 150.0
    max_steps: int = 1000
    batch_size: int = 32
    # 1e-4 over 48 tokens (the title and the first body words): within the 150 s budget on two
    # cores there are only ~80 steps, and at 3e-5 over 64 tokens they moved held-out title
    # retrieval about half as far
    learning_rate: float = 1e-4
    max_length: int = 48
    same_subcategory_positives: bool = True
    # Before/after figure: precision@k of same-subcategory nearest neighbours among the titles of
    # articles held out of fine-tuning (titles alone: title + body separates topics more easily).
    retrieval_k: int = 10
    holdout_fraction: float = 0.2
    max_training_texts: int = 20_000
    seed: int = 0


@dg.asset(
    group_name=GROUP,
    deps=[dg.AssetKey("current_articles")],
    kinds={"pytorch"},
    automation_condition=dg.AutomationCondition.on_missing()
    | dg.AutomationCondition.on_cron("0 3 * * 0"),  # weekly: the vocabulary of news drifts slowly
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(days=8)),
)
def text_encoder(
    context: dg.AssetExecutionContext,
    config: TextEncoderConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> dg.MaterializeResult:
    """BERT sentence encoder fine-tuned SimCSE-style on the article corpus.

    Dropout views are positives and the rest of the batch negatives; with
    `same_subcategory_positives`, articles of one subcategory are positives too. Starts from the
    packaged MiniLM (or `base_model_path`, e.g. a Japanese BERT in production); nothing is
    downloaded. Records title-only same-subcategory precision@k among the articles held out of
    fine-tuning (`holdout_fraction`), before (the base model) and after.
    """
    from newsrec_assets.domain.text_encoder import (
        SimCSEConfig,
        compose_article_text,
        fine_tune_simcse,
        save_encoder,
    )

    articles = warehouse.get(read_only=True).article_texts(limit=config.max_training_texts)
    titles, subcategories = articles["title"].to_pylist(), articles["subcategory"].to_pylist()
    texts = [compose_article_text(t, b) for t, b in zip(titles, articles["body"].to_pylist(), strict=True)]
    held = np.random.default_rng(config.seed).random(len(texts)) < config.holdout_fraction
    trained = np.flatnonzero(~held).tolist()
    model, tokenizer, report = fine_tune_simcse(
        config.base_model_path or None,
        [texts[i] for i in trained],
        subcategory_labels=[subcategories[i] for i in trained],
        holdout_texts=[titles[i] for i in np.flatnonzero(held)],
        holdout_labels=[subcategories[i] for i in np.flatnonzero(held)],
        config=SimCSEConfig(
            eval_k=config.retrieval_k,
            same_label_positives=config.same_subcategory_positives,
            time_budget_s=config.time_budget_seconds,
            max_steps=config.max_steps,
            batch_size=config.batch_size,
            lr=config.learning_rate,
            max_length=config.max_length,
            seed=config.seed,
            progress=True,
        ),
    )
    with tempfile.TemporaryDirectory() as folder:
        version = save_encoder(model, tokenizer, folder, report=report)
        uri = artifacts.get().put(TEXT_ENCODER_KIND, version, Path(folder))
    artifacts.get().set_latest(TEXT_ENCODER_KIND, version)
    context.log.info(
        f"encoder {version}: held-out title retrieval precision@{config.retrieval_k} "
        f"{report['holdout_retrieval_before']:.3f} -> {report['holdout_retrieval_after']:.3f} "
        f"in {report['steps']} steps, {report['seconds']:.0f} s"
    )
    return dg.MaterializeResult(
        metadata={
            "version": version,
            "uri": uri,
            "training_texts": len(trained),
            "held_out_articles": report["n_holdout"],
            "steps": report["steps"],
            "seconds": round(report["seconds"], 1),
            "stopped_by": report["stopped_by"],
            f"held_out_title_subcategory_precision_at_{config.retrieval_k}_before": round(
                float(report["holdout_retrieval_before"]), 4
            ),
            f"held_out_title_subcategory_precision_at_{config.retrieval_k}_after": round(
                float(report["holdout_retrieval_after"]), 4
            ),
            "loss_curve": line_plot(
                {"InfoNCE loss": report["loss_curve"]}, "step", "loss", "SimCSE fine-tuning"
            ),
        },
        data_version=dg.DataVersion(version),
    )


class ArticleEmbeddingsConfig(dg.Config):
    batch_size: int = 64
    title_max_length: int = 32
    body_max_length: int = 128


def vectors_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("article_id", pa.string()),
            ("content_hash", pa.string()),
            ("encoder_version", pa.string()),
            ("title_vector", pa.list_(pa.float32(), dim)),
            ("body_vector", pa.list_(pa.float32(), dim)),
            ("embedded_at", pa.timestamp("us", tz="UTC")),
        ]
    )


def fixed_size_vectors(matrix: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.astype(np.float32).ravel()), matrix.shape[1])


@dg.asset(
    group_name=GROUP,
    deps=[text_encoder, dg.AssetKey("current_articles")],
    kinds={"pytorch", warehouse_kind()},
    pool=WAREHOUSE_WRITER_POOL,
)
def article_embeddings(
    context: dg.AssetExecutionContext,
    config: ArticleEmbeddingsConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactStoreResource,
) -> dg.MaterializeResult:
    """Title and body vectors of every current article, by the latest text encoder.

    Incremental: only articles that are new or whose text changed (content hash) since they were
    last embedded by this encoder version are embedded; a new encoder version re-embeds everything.
    """
    from datetime import UTC, datetime

    from newsrec_assets.domain.text_encoder import embed_texts, load_encoder

    store = artifacts.get()
    encoder_version = store.latest(TEXT_ENCODER_KIND)
    if encoder_version is None:
        raise dg.Failure("No text encoder has been published yet: materialise `text_encoder` first.")
    db = warehouse.get()
    todo = db.articles_to_embed(encoder_version)
    started = time.perf_counter()
    if todo.num_rows:
        model, tokenizer = load_encoder(store.fetch(TEXT_ENCODER_KIND, encoder_version))
        titles = embed_texts(
            model,
            tokenizer,
            todo["title"].to_pylist(),
            config.batch_size,
            config.title_max_length,
            progress=True,
        )
        bodies = embed_texts(
            model,
            tokenizer,
            todo["body"].to_pylist(),
            config.batch_size,
            config.body_max_length,
            progress=True,
        )
        rows = pa.table(
            {
                "article_id": todo["article_id"],
                "content_hash": todo["content_hash"],
                "encoder_version": pa.array([encoder_version] * todo.num_rows),
                "title_vector": fixed_size_vectors(titles),
                "body_vector": fixed_size_vectors(bodies),
                "embedded_at": pa.array([datetime.now(UTC)] * todo.num_rows, pa.timestamp("us", tz="UTC")),
            },
            schema=vectors_schema(titles.shape[1]),
        )
        # Old vectors of re-embedded articles, and every vector of an older encoder, are replaced.
        db.store_article_vectors(rows, encoder_version)
    seconds = time.perf_counter() - started
    total = db.count_article_vectors()
    context.log.info(f"embedded {todo.num_rows} articles in {seconds:.1f} s ({total} stored)")
    return dg.MaterializeResult(
        metadata={
            "encoder_version": encoder_version,
            "embedded_this_run": todo.num_rows,
            "articles_with_vectors": total,
            "seconds": round(seconds, 2),
            "articles_per_second": round(todo.num_rows / seconds, 1) if todo.num_rows and seconds else None,
        }
    )

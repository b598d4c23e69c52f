"""Model: encoder fine-tuning and what it buys, NAML against the data's ceiling, user encoding.

Data: the news-app simulator's history at demo size (3,000 users, 3,000 articles, 7 days, 5.2
sessions per user per day: about 1.1M impression rows and 220k view events; `--quick`: 300 users,
200 articles, 3 days), turned into what the dbt marts hold (current articles, the impression log
in three time windows, view events). The assets' own code runs on it, without Dagster or the
warehouse: `fine_tune_simcse` with `text_encoder`'s settings, and `training_run.train_and_evaluate`
(the body of `naml_model`: train window, early stopping on validation, every figure on the test
window, the last 24 h) with `naml_model`'s settings, so the figures are the model code's.

- **Encoder fine-tuning** (SimCSE with same-subcategory positives, the asset's 150 s budget, 20 %
  of the articles held out): wall time against the 3-minute limit, and title-only
  same-subcategory precision@10 among the held-out articles, stock MiniLM against fine-tuned
  (goal: above stock).
- **Embedding** (titles at 32 tokens, bodies at 128, batch 64): articles per second.
- **NAML to early stop** on the fine-tuned vectors (time budget lifted): wall time against the
  5-minute limit; the test-window table of NAML and the baselines with 95 % bootstrap intervals.
- **The restated goal**: NAML's AUC lift over random relative to the oracle's,
  `(AUC - 0.5) / (AUC_oracle - 0.5)`, at least 0.95 x the position-blind ceiling that
  `bench/ceiling.py` computes on this same history in this run (every term estimated from the
  impressions before each row, the list position left out).
- **NAML on stock vectors**: the same training on the stock MiniLM's vectors; the test-window
  AUC difference, fine-tuned minus stock, with a paired bootstrap interval (goal: at least as good).
- **Batch user encoding** (`encode_users_numpy`, histories of 50 clicks): users per second.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from bench.common import Context, Phases, best_of, timed
from bench.report import Figure, Outcome, markdown_table

GOAL_FINE_TUNE_S = 180.0
GOAL_TRAINING_S = 300.0
GOAL_SHARE_OF_CEILING = 0.95
END = datetime(2026, 11, 20, 6, tzinfo=UTC)
MS_PER_HOUR = 3_600_000


def simulated_data(users: int, articles: int, days: float, seed: int):
    """The simulator's history and each article's current CMS row (None once deleted)."""
    from newsrec_assets.domain.simulator import SimulationConfig, simulate_history

    config = SimulationConfig(end=END, seed=seed + 7, users=users, articles=articles, days=days)
    history = simulate_history(config)
    rows: dict[int, dict | None] = {}
    for change in history.article_changes:  # sorted by time: the last change is the current state
        rows[change.article_index] = None if change.change_type == "DELETE" else change.row
    return history, [rows.get(i) for i in range(history.articles.count)]


def marts(history, rows, title_vecs: np.ndarray, body_vecs: np.ndarray):
    """The catalogue, impressions (three windows) and view events as the marts would hold them."""
    from newsrec_assets.defs.model.data import ClickLog, Impressions
    from newsrec_assets.domain.catalogue import Catalogue
    from newsrec_assets.domain.simulator.world import article_id, user_id
    from newsrec_assets.domain.training import ImpressionLog

    current = np.array([row is not None for row in rows])
    kept = np.flatnonzero(current)
    catalogue = Catalogue.build(
        article_ids=[article_id(i) for i in kept],
        published_at=history.articles.published_ms[kept].astype("datetime64[ms]"),
        title_vecs=title_vecs[kept],
        body_vecs=body_vecs[kept],
        categories=[rows[i]["category"] for i in kept],
        subcategories=[rows[i]["subcategory"] for i in kept],
    )
    imps, views = history.impressions, history.views
    n = history.articles.count
    from_list = views.impression_number >= 0
    click_ms = dict(
        zip(
            (views.impression_number[from_list] * n + views.article[from_list]).tolist(),
            views.viewed_ms[from_list].tolist(),
            strict=True,
        )
    )
    shown = current[imps.article]  # deleted articles are not in the marts
    keys = (imps.number * n + imps.article)[shown]
    clicked_at = np.array([click_ms.get(k, -1) for k in keys.tolist()], dtype=np.int64)
    end_ms = history.config.end_ms
    shown_ms = imps.shown_ms[shown]
    split = np.where(
        shown_ms >= end_ms - 24 * MS_PER_HOUR,
        "test",
        np.where(shown_ms >= end_ms - 48 * MS_PER_HOUR, "validation", "train"),
    )
    user_ids = np.array([user_id(u) for u in range(history.users.count)], dtype=object)
    article_ids = np.array([article_id(a) for a in range(n)], dtype=object)
    data = Impressions(
        log=ImpressionLog(
            impression_ids=imps.number[shown],
            user_ids=user_ids[imps.user[shown]],
            shown_times=shown_ms.astype("datetime64[ms]").astype("datetime64[us]"),
            article_rows=catalogue.rows(article_ids[imps.article[shown]].tolist()),
            clicked=clicked_at >= 0,
            split=split,
        ),
        article_ids=article_ids[imps.article[shown]],
        positions=imps.position[shown],
        clicked_at=np.where(clicked_at >= 0, clicked_at, np.iinfo(np.int64).min)
        .astype("datetime64[ms]")
        .astype("datetime64[us]"),
        dropped_unknown_articles=int((~shown).sum()),
    )
    clicks = ClickLog(
        user_ids=user_ids[views.user],
        article_ids=article_ids[views.article],
        article_rows=catalogue.rows(article_ids[views.article].tolist()),
        viewed_at=views.viewed_ms.astype("datetime64[ms]").astype("datetime64[us]"),
    )
    return catalogue, data, clicks


def run(ctx: Context) -> Outcome:
    import torch

    from bench import ceiling
    from newsrec_assets.defs.embeddings.assets import TextEncoderConfig
    from newsrec_assets.defs.model.assets import NamlTrainingConfig
    from newsrec_assets.defs.model.training_run import train_and_evaluate
    from newsrec_assets.domain.evaluation import METRICS, compare_rankers
    from newsrec_assets.domain.naml import encode_news_numpy, user_encoder_numpy_params
    from newsrec_assets.domain.text_encoder import (
        SimCSEConfig,
        compose_article_text,
        embed_texts,
        fine_tune_simcse,
        load_encoder,
        retrieval_accuracy,
    )
    from newsrec_assets.domain.user_encoding import encode_users_numpy

    n_users = ctx.size(3000, 300, "model.users")
    n_articles = ctx.size(3000, 200, "model.articles")
    days = ctx.size(7.0, 3.0, "model.days")
    ft_budget = ctx.size(150.0, 12.0, "model.finetune_budget_s")
    ft_steps = ctx.size(1000, 8, "model.finetune_max_steps")
    max_epochs = ctx.size(10, 10, "model.max_epochs")
    encode_users = ctx.size(200_000, 10_000, "model.encode_users")
    encoder_config = TextEncoderConfig()
    phases = Phases()

    ctx.log(f"model: simulating {n_users:,} users, {n_articles:,} articles, {days:g} days")
    (history, rows), sim_s = timed(lambda: simulated_data(n_users, n_articles, days, ctx.seed))
    current = [i for i, row in enumerate(rows) if row is not None]
    titles = ["" if row is None else row["title"] for row in rows]
    bodies = ["" if row is None else row["body"] for row in rows]
    subcategories = [None if row is None else row["subcategory"] for row in rows]

    ctx.log("model: the position-blind ceiling on the same history")
    ceiling_result, ceiling_s = phases.run("ceiling", lambda: ceiling.measure_history(history, ctx.log))
    ceiling_lift = ceiling_result["lift"][ceiling.POSITION_BLIND_CEILING]

    held = np.random.default_rng(encoder_config.seed).random(len(current)) < encoder_config.holdout_fraction
    train_idx = [i for i, h in zip(current, held, strict=True) if not h]
    held_idx = [i for i, h in zip(current, held, strict=True) if h]
    ctx.log(f"model: SimCSE fine-tuning on {len(train_idx):,} articles, {len(held_idx):,} held out")
    (model, tokenizer, report), ft_s = phases.run(
        "encoder fine-tuning",
        lambda: fine_tune_simcse(
            None,
            [compose_article_text(titles[i], bodies[i]) for i in train_idx],
            subcategory_labels=[subcategories[i] for i in train_idx],
            holdout_texts=[titles[i] for i in held_idx],
            holdout_labels=[subcategories[i] for i in held_idx],
            config=SimCSEConfig(
                time_budget_s=ft_budget,
                max_steps=ft_steps,
                batch_size=encoder_config.batch_size,
                lr=encoder_config.learning_rate,
                max_length=encoder_config.max_length,
                eval_k=encoder_config.retrieval_k,
                seed=ctx.seed,
            ),
        ),
    )
    held_stock, held_tuned = report["holdout_retrieval_before"], report["holdout_retrieval_after"]
    ctx.log(
        f"model: fine-tuned {report['steps']} steps in {ft_s:.0f} s ({report['stopped_by']}); held-out "
        f"title precision@{encoder_config.retrieval_k} {held_stock:.3f} (stock) -> {held_tuned:.3f}"
    )

    def embed(encoder, encoder_tokenizer, label: str) -> tuple[np.ndarray, np.ndarray, float]:
        ctx.log(f"model: embedding {len(titles):,} titles and bodies ({label})")
        embed_texts(encoder, encoder_tokenizer, titles[:64], 64, 32)  # warm-up
        (title_vecs, body_vecs), seconds = phases.run(
            f"embedding ({label})",
            lambda: (
                embed_texts(encoder, encoder_tokenizer, titles, 64, 32),
                embed_texts(encoder, encoder_tokenizer, bodies, 64, 128),
            ),
        )
        return title_vecs, body_vecs, seconds

    title_vecs, body_vecs, embed_s = embed(model, tokenizer, "fine-tuned")
    articles_per_s = len(titles) / embed_s
    model = tokenizer = None  # free the encoder before NAML training
    stock_titles, stock_bodies, _ = embed(*load_encoder(), "stock")
    # the held-out figure again from the stored vectors: what NAML actually gets
    held_stock_vectors = retrieval_accuracy(
        stock_titles[held_idx], [subcategories[i] for i in held_idx], k=encoder_config.retrieval_k
    )

    settings = NamlTrainingConfig(max_epochs=max_epochs, time_budget_seconds=3600.0, seed=ctx.seed)
    runs, catalogues = {}, {}
    for label, (t_vecs, b_vecs) in (
        ("fine-tuned", (title_vecs, body_vecs)),
        ("stock", (stock_titles, stock_bodies)),
    ):
        catalogue, data, clicks = marts(history, rows, t_vecs, b_vecs)
        catalogues[label] = catalogue
        ctx.log(f"model: NAML training to early stop on {label} vectors (at most {max_epochs} epochs)")
        runs[label], _ = phases.run(
            f"NAML training ({label})",
            lambda c=catalogue, d=data, k=clicks: train_and_evaluate(
                c, d, k, settings, oracle=history.oracle.click_probability, log=ctx.log, progress=False
            ),
        )
    tuned, stock = runs["fine-tuned"], runs["stock"]
    result = tuned.result
    train_s = result.seconds
    epochs = len(result.history)
    samples_per_s = (
        result.n_train_samples * epochs / max(1e-9, sum(h["epoch_seconds"] for h in result.history))
    )
    share = tuned.lift / ceiling_lift if tuned.lift is not None else float("nan")
    test = data.log.split == "test"
    vectors_compared = compare_rankers(
        data.log.impression_ids[test],
        data.log.clicked[test].astype(np.int64),
        {"fine-tuned": tuned.scores["naml"], "stock": stock.scores["naml"]},
        candidate="fine-tuned",
        baseline="stock",
        n_resamples=settings.bootstrap_resamples,
        seed=ctx.seed,
    )
    difference = vectors_compared.differences["auc"]
    ctx.log(
        f"model: NAML {epochs} epochs in {train_s:.0f} s ({result.stopped_by}); test AUC "
        f"{tuned.table['naml']['auc']:.4f}, lift {tuned.lift:.3f} = {share:.3f} of the ceiling's "
        f"{ceiling_lift:.3f}; fine-tuned - stock AUC {difference}"
    )

    features = catalogues["fine-tuned"].features
    news_vecs = encode_news_numpy(
        result.model, features.title_vecs, features.body_vecs, features.cat_ids, features.subcat_ids
    )
    params = user_encoder_numpy_params(result.model)
    rng = np.random.default_rng(ctx.seed)
    history_len = result.model.config.max_history
    batch = 4096
    mask = np.ones((batch, history_len), dtype=bool)
    sample = news_vecs[rng.integers(0, len(news_vecs), size=(batch, history_len))]  # batch, H, dim
    encode_users_numpy(params, sample, mask)  # warm-up
    per_batch = best_of(lambda: encode_users_numpy(params, sample, mask), 3)
    n_batches = max(1, encode_users // batch)

    def encode_all() -> None:
        for _ in range(n_batches):
            idx = rng.integers(0, len(news_vecs), size=(batch, history_len))
            encode_users_numpy(params, news_vecs[idx], mask)

    _, all_s = phases.run("user encoding", encode_all)
    users_per_s = n_batches * batch / all_s
    torch_threads = torch.get_num_threads()
    k = encoder_config.retrieval_k
    naml_auc = tuned.comparison.metrics["naml"]["auc"]

    figures = [
        Figure(
            "text encoder fine-tuning (SimCSE) wall time",
            ft_s,
            "s",
            GOAL_FINE_TUNE_S,
            "at_most",
            note=f"{report['steps']} steps, stopped by {report['stopped_by']} (budget {ft_budget:g} s)",
        ),
        Figure(
            f"held-out title-only same-subcategory precision@{k}, fine-tuned encoder",
            held_tuned,
            "",
            held_stock,
            "at_least",
            reference=f"stock MiniLM {held_stock:.3f}, same {len(held_idx):,} held-out articles (same run)",
        ),
        Figure("article embedding throughput (title 32 + body 128 tokens)", articles_per_s, "articles/s"),
        Figure(
            f"NAML training to early stop ({len(data.log.clicked):,} impression rows)",
            train_s,
            "s",
            GOAL_TRAINING_S,
            "at_most",
            note=f"{epochs} epochs, stopped by {result.stopped_by}, best epoch {result.best_epoch}",
        ),
        Figure("NAML training throughput", samples_per_s, "samples/s", note="1 positive + 4 negatives each"),
        Figure(
            "NAML test-window AUC",
            naml_auc.estimate,
            "",
            note=f"95 % interval [{naml_auc.low:.4f}, {naml_auc.high:.4f}]; popularity "
            f"{tuned.table['popularity']['auc']:.4f}",
        ),
        Figure("NAML AUC lift relative to the oracle's", tuned.lift, "×"),
        Figure(
            "position-blind ceiling: lift of the best estimate without the list position",
            ceiling_lift,
            "×",
            note="bench/ceiling.py on this history, this run",
        ),
        Figure(
            "NAML lift / position-blind ceiling lift (the restated goal)",
            share,
            "×",
            GOAL_SHARE_OF_CEILING,
            "at_least",
            reference=f"ceiling lift {ceiling_lift:.3f} on the same data (same run)",
        ),
        Figure(
            "NAML test-window AUC on fine-tuned vectors",
            tuned.table["naml"]["auc"],
            "",
            stock.table["naml"]["auc"],
            "at_least",
            reference=f"on stock MiniLM vectors {stock.table['naml']['auc']:.4f} (same run); "
            f"difference {difference}",
        ),
        Figure(f"batch user encoding (H={history_len}, numpy, incl. gather)", users_per_s, "users/s"),
        Figure("batch user encoding: projected 1M users", 1e6 / users_per_s, "s"),
    ]
    metric_rows = [
        [name, *[str(tuned.comparison.metrics[name][m]) for m in METRICS]]
        for name in tuned.comparison.metrics
    ]
    metric_rows.append(["naml - popularity", *[str(tuned.comparison.differences[m]) for m in METRICS]])
    metric_rows.append(["naml, stock vectors", *[str(stock.comparison.metrics["naml"][m]) for m in METRICS]])
    tables = [
        (
            "Data",
            markdown_table(
                ["users", "articles", "days", "impression rows", "views", "train samples", "simulated in"],
                [
                    [
                        n_users,
                        n_articles,
                        days,
                        len(history.impressions),
                        len(history.views),
                        result.n_train_samples,
                        f"{sim_s:.1f} s",
                    ]
                ],
            ),
        ),
        (
            "Time windows",
            markdown_table(
                ["window", *next(iter(tuned.windows.values()))],
                [[name, *window.values()] for name, window in tuned.windows.items()],
            ),
        ),
        (
            "Test window: mean per impression [95 % bootstrap interval]",
            markdown_table(["ranker", *METRICS], metric_rows),
        ),
        (
            "Against the ceiling (same history, same run)",
            markdown_table(
                ["estimate", "AUC", "lift"],
                [[name, value, ceiling_result["lift"][name]] for name, value in ceiling_result["auc"].items()]
                + [["NAML (test window)", tuned.table["naml"]["auc"], tuned.lift]],
            ),
        ),
        (
            "NAML training history (fine-tuned vectors)",
            markdown_table(
                ["epoch", "train loss", "val AUC", "epoch s", "total s"],
                [
                    [h["epoch"], h["train_loss"], h["val_auc"], h["epoch_seconds"], h["seconds"]]
                    for h in result.history
                ],
            ),
        ),
        (
            "Encoder fine-tuning",
            markdown_table(
                [
                    "steps",
                    "stopped by",
                    "train s",
                    "total s",
                    f"held-out title p@{k}: stock",
                    "fine-tuned",
                    "torch threads",
                ],
                [
                    [
                        report["steps"],
                        report["stopped_by"],
                        report["train_seconds"],
                        ft_s,
                        held_stock,
                        held_tuned,
                        torch_threads,
                    ]
                ],
            ),
        ),
        ("Machine contention per phase", markdown_table(*phases.table())),
    ]
    details = {
        "phases": phases.rows,
        "data": {
            "users": n_users,
            "articles": n_articles,
            "days": days,
            "impression_rows": len(history.impressions),
            "views": len(history.views),
            "windows": tuned.windows,
        },
        "fine_tune": {key: value for key, value in report.items() if key != "loss_curve"},
        "fine_tune_loss_curve": report["loss_curve"],
        "held_out_stock_from_vectors": held_stock_vectors,
        "ceiling": {**ceiling_result, "seconds": ceiling_s},
        "naml": {
            "seconds": train_s,
            "history": result.history,
            "stopped_by": result.stopped_by,
            "best_epoch": result.best_epoch,
            "n_train_samples": result.n_train_samples,
            "evaluation": tuned.evaluation,
            "share_of_ceiling": share,
        },
        "naml_stock_vectors": {
            "evaluation": stock.evaluation,
            "fine_tuned_minus_stock_auc": difference.to_dict(),
        },
        "user_encoding": {"users_per_s": users_per_s, "encoder_only_users_per_s": batch / per_batch},
    }
    return Outcome(figures=figures, details=details, tables=tables)

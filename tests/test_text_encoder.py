"""Text encoder: pooling, embedding, SimCSE fine-tuning and encoder files, on a tiny random BERT.

One test loads the packaged all-MiniLM-L6-v2 for real.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from newsrec_assets.domain.text_encoder import (
    SimCSEConfig,
    compose_article_text,
    contrastive_loss,
    default_model_path,
    embed_texts,
    encoder_version,
    fine_tune_simcse,
    load_encoder,
    load_encoder_metadata,
    mean_pool,
    retrieval_accuracy,
    save_encoder,
)

TOPICS = {
    "football": ["goal", "striker", "match", "keeper", "penalty", "league", "coach", "stadium"],
    "markets": ["stock", "shares", "investors", "bank", "rates", "inflation", "profit", "trading"],
    "weather": ["storm", "rain", "flood", "wind", "forecast", "snow", "heat", "cloud"],
    "science": ["space", "rocket", "planet", "telescope", "lab", "study", "cells", "genome"],
}
FILLER = ["the", "a", "of", "to", "in", "and", "on", "for", "with", "new", "says", "after"]


def topic_texts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Short headline-like texts: a few words of one topic mixed with filler words."""
    rng = np.random.default_rng(seed)
    names = sorted(TOPICS)
    texts, labels = [], []
    for i in range(n):
        topic = names[i % len(names)]
        words = list(rng.choice(TOPICS[topic], size=4)) + list(rng.choice(FILLER, size=3))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(topic)
    return texts, labels


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A randomly initialised 2-layer BERT with a WordPiece vocabulary of the test words."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    words = sorted({w for pool in TOPICS.values() for w in pool} | set(FILLER))
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # 1, 3 tokens, 2
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))


def test_compose_article_text_takes_the_first_body_words():
    assert compose_article_text("Title", "one two three four", body_words=2) == "Title. one two"
    assert compose_article_text("Title", None) == "Title"


def test_embed_texts_shapes_order_and_padding(tiny_bert):
    model, tokenizer = load_encoder(tiny_bert)
    texts, _ = topic_texts(9)
    texts[3] = texts[3] + " " + " ".join(["storm"] * 20)  # one long text: forces padding of the others
    together = embed_texts(model, tokenizer, texts, batch_size=4)
    assert together.shape == (9, 32) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([embed_texts(model, tokenizer, [t], batch_size=1) for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)  # order restored, padding ignored
    assert embed_texts(model, tokenizer, []).shape == (0, 32)
    assert not model.training


def test_retrieval_accuracy_hand_example():
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.8, 0.2]])
    labels = ["a", "a", "b", "b", "b"]
    # nearest neighbours: 0->1 (a, hit), 1->0 (hit), 2->3 (hit), 3->2 (hit), 4->1 (miss)
    assert retrieval_accuracy(emb, labels, k=1) == pytest.approx(4 / 5)
    assert retrieval_accuracy(emb, ["a", "a", None, None, "b"], k=1) == pytest.approx(2 / 3)
    assert np.isnan(retrieval_accuracy(emb[:1], ["a"], k=1))


def test_contrastive_loss_is_simcse_without_labels():
    torch.manual_seed(0)
    z1 = F.normalize(torch.randn(6, 8), dim=-1)
    z2 = F.normalize(torch.randn(6, 8), dim=-1)
    sim = z1 @ z2.T / 0.05
    targets = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(sim, targets) + F.cross_entropy(sim.T, targets))
    torch.testing.assert_close(contrastive_loss(z1, z2, None, 0.05), expected)
    # with labels, every item sharing the anchor's (known) label is a positive too
    labels = torch.tensor([0, 0, 1, 1, -1, -1])
    got = contrastive_loss(z1, z2, labels, 0.05)
    positives = [[0, 1], [0, 1], [2, 3], [2, 3], [4], [5]]

    def reference(s: torch.Tensor) -> torch.Tensor:
        log_prob = F.log_softmax(s, dim=1)
        return torch.stack([-log_prob[i, p].mean() for i, p in enumerate(positives)]).mean()

    torch.testing.assert_close(got, 0.5 * (reference(sim) + reference(sim.T)))
    # and the loss is lower when same-label items sit together than when they are apart
    together = F.normalize(torch.tensor([[1.0, 0], [1, 0.01], [0, 1], [0.01, 1], [-1, 0], [0, -1]]), dim=-1)
    apart = together[[0, 2, 1, 3, 4, 5]]
    assert contrastive_loss(together, together, labels) < contrastive_loss(apart, apart, labels)


def test_fine_tune_simcse_lowers_the_loss_and_helps_texts_it_never_saw(tiny_bert):
    texts, labels = topic_texts(128)
    held_texts, held_labels = topic_texts(60, seed=1)
    config = SimCSEConfig(
        max_steps=40, batch_size=16, lr=1e-3, time_budget_s=60, seed=0, num_threads=1, eval_max_items=128
    )
    model, tokenizer, report = fine_tune_simcse(tiny_bert, texts, labels, config)
    _, _, held_out = fine_tune_simcse(
        tiny_bert, texts, labels, config, holdout_texts=held_texts, holdout_labels=held_labels
    )
    assert report["steps"] == 40 and report["stopped_by"] == "max_steps"
    curve = report["loss_curve"]
    assert len(curve) == 40
    assert np.mean(curve[-5:]) < 0.8 * np.mean(curve[:5])
    assert report["supervised"] and report["n_eval"] == 128
    assert 0.0 <= report["retrieval_acc_before"] <= 1.0
    assert report["retrieval_acc_after"] > report["retrieval_acc_before"]
    assert held_out["n_holdout"] == 60 and np.isnan(held_out["retrieval_acc_after"])
    assert held_out["holdout_retrieval_after"] > held_out["holdout_retrieval_before"]
    assert not model.training
    assert embed_texts(model, tokenizer, texts[:2]).shape == (2, 32)


def test_fine_tune_simcse_unsupervised_and_budget(tiny_bert):
    texts, _ = topic_texts(64)
    config = SimCSEConfig(max_steps=100_000, batch_size=8, lr=1e-3, time_budget_s=1.5, num_threads=1)
    _, _, report = fine_tune_simcse(tiny_bert, texts, None, config)
    assert report["stopped_by"] == "time_budget"
    assert report["steps"] > 0
    assert report["seconds"] < 1.5 + 0.5  # stops at the budget (one step of slack at most)
    assert not report["supervised"] and np.isnan(report["retrieval_acc_before"])
    assert np.isnan(report["holdout_retrieval_after"]) and report["n_holdout"] == 0


def test_save_and_load_encoder(tiny_bert, tmp_path):
    model, tokenizer = load_encoder(tiny_bert)
    texts, _ = topic_texts(4)
    version = save_encoder(model, tokenizer, tmp_path / "enc", report={"steps": 3})
    assert version.startswith("enc-")
    assert save_encoder(model, tokenizer, tmp_path / "enc2") == version  # content hash, not a timestamp
    assert encoder_version(tmp_path / "enc") == version
    meta = load_encoder_metadata(tmp_path / "enc")
    assert meta["version"] == version and meta["report"] == {"steps": 3} and meta["hidden_size"] == 32
    loaded_model, loaded_tokenizer = load_encoder(tmp_path / "enc")
    np.testing.assert_allclose(
        embed_texts(model, tokenizer, texts), embed_texts(loaded_model, loaded_tokenizer, texts), atol=1e-6
    )


def test_packaged_minilm_embeds_similar_sentences_closer():
    assert (default_model_path() / "config.json").is_file()
    model, tokenizer = load_encoder()
    emb = embed_texts(
        model,
        tokenizer,
        [
            "The central bank raised interest rates to fight inflation.",
            "Interest rates were increased by the central bank as prices climb.",
            "The striker scored twice as the home team won the derby.",
        ],
    )
    assert emb.shape == (3, 384)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    assert sims[0, 1] > sims[1, 2] + 0.2

"""Speed update: time of one speed-layer update with 10k and with 1M users in the store.

For each size, a synthetic serving snapshot (N users × 50-click histories, 10k articles, d = 128,
the real NAML user-encoder shapes) is saved in the snapshot format and N users' lists are published
to a SQLite online store. Then `speed.update_speed_lists` (exactly what `speed_layer_sensor` calls
in its tick) runs on batches of 10 view events of random users: the first after opening the
snapshot and the store ("cold", as after a batch publish), the rest with both kept open as the
code server does ("warm"), the two sizes' updates alternating so that the shared machine's load
hits both alike. Reference in the same run: the former path, which read the whole snapshot
into memory on every update (`ServingSnapshot.load(mmap=False)`, what each speed run did).
Goal: warm median at 1M users ≤ 1.5 × the one at 10k.

Standalone: `python -m bench.speed_update --users 10000 1000000`.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ARTICLES, DIM, HISTORY, EVENTS_PER_UPDATE, LIST_LENGTH = 10_000, 128, 50, 10, 100


def _build(home: Path, users: int, seed: int, log) -> list[str]:
    import torch

    from newsrec_assets.domain.naml import NamlConfig, NamlModel, user_encoder_numpy_params
    from newsrec_assets.domain.recommend import ServingSnapshot
    from newsrec_assets.resources.artifacts import LocalArtifactStore
    from newsrec_assets.resources.online_store.base import UserRecommendations
    from newsrec_assets.resources.online_store.sqlite import SQLiteListStore

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    user_ids = np.array([f"u{i:08d}" for i in range(users)])
    article_ids = np.array([f"a{i:06d}" for i in range(ARTICLES)], dtype=object)
    watermark = datetime.now(UTC) - timedelta(minutes=5)
    started = time.perf_counter()
    snapshot = ServingSnapshot(
        model_version="naml-bench",
        watermark=watermark,
        article_ids=article_ids,
        news_vectors=rng.normal(size=(ARTICLES, DIM)).astype(np.float32),
        published_at_us=np.zeros(ARTICLES, dtype=np.int64),
        candidate_rows=np.arange(ARTICLES),
        candidate_priors=rng.normal(size=ARTICLES).astype(np.float32),
        user_ids=user_ids,
        history_rows=rng.integers(0, ARTICLES, size=(users, HISTORY), dtype=np.int32),
        encoder_params=user_encoder_numpy_params(NamlModel(NamlConfig(news_dim=DIM))),
        users_sorted=True,  # generated in order
    )
    with tempfile.TemporaryDirectory() as folder:
        snapshot.save(Path(folder))
        store = LocalArtifactStore(home / "artifacts")
        store.put("serving_snapshot", "bench", Path(folder))
        store.set_latest("serving_snapshot", "bench")
    log(f"{users:,} users: snapshot saved in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    scores = np.linspace(1, 0, 20, dtype=np.float32)
    ids = tuple(article_ids[:20])
    vector = np.zeros(DIM + 1, dtype=np.float32)

    def lists():
        for user_id in user_ids.tolist():
            yield UserRecommendations(
                user_id=user_id,
                article_ids=ids,
                scores=scores,
                model_version="naml-bench",
                layer="batch",
                computed_at=watermark,
                watermark=watermark,
                user_vector=vector,
            )

    with SQLiteListStore(home / "online.sqlite") as online:
        online.publish_batch(lists(), model_version="naml-bench", chunk_size=5000)
    log(f"{users:,} users: {users:,} lists published to SQLite in {time.perf_counter() - started:.1f} s")
    return user_ids.tolist()


def _events(rng: random.Random, user_ids: list[str], now_us: int):
    from newsrec_assets.defs.recommendations.speed import ViewEvent

    return [
        ViewEvent(rng.choice(user_ids), f"a{rng.randrange(ARTICLES):06d}", now_us + i)
        for i in range(EVENTS_PER_UPDATE)
    ]


class _Store:
    """One size's snapshot and online store, built in a temporary folder."""

    def __init__(self, users: int, seed: int, log):
        from newsrec_assets.defs.resources import ArtifactStoreResource, OnlineStoreResource

        self.users = users
        self.home = Path(tempfile.mkdtemp(prefix=f"newsrec-speed-update-{users}-"))
        self.user_ids = _build(self.home, users, seed, log)
        # each size has its own store files; `update` swaps its open snapshot and store in
        self.artifacts = ArtifactStoreResource(root=str(self.home / "artifacts"))
        self.online = OnlineStoreResource(sqlite_path=str(self.home / "online.sqlite"))
        self.snapshot = None
        self.stores = None

    def update(self, rng: random.Random, at_us: int) -> float:
        """One speed update of EVENTS_PER_UPDATE events; its wall time."""
        from newsrec_assets.defs.recommendations import speed

        # the speed layer keeps one snapshot and one store open: swap this size's in, untimed
        speed._open_snapshots.clear()
        speed._open_stores.clear()
        if self.snapshot is not None:
            speed._open_snapshots.update(self.snapshot)
            speed._open_stores.update(self.stores)
        events = _events(rng, self.user_ids, at_us)
        started = time.perf_counter()
        update = speed.update_speed_lists(events, self.artifacts, self.online)
        elapsed = time.perf_counter() - started
        assert update.lists_written == update.users, update
        self.snapshot, self.stores = dict(speed._open_snapshots), dict(speed._open_stores)
        return elapsed

    def whole_load_update(self, rng: random.Random, at_us: int) -> float:
        """The former path: the whole snapshot read into memory, then the same update."""
        from newsrec_assets.defs.recommendations import speed
        from newsrec_assets.domain.recommend import ServingSnapshot

        folder = self.artifacts.get().fetch("serving_snapshot", "bench")
        speed._open_snapshots.clear()
        speed._open_stores.clear()
        speed._open_stores.update(self.stores)
        started = time.perf_counter()
        speed._open_snapshots[str(folder)] = ServingSnapshot.load(folder, mmap=False)
        speed.update_speed_lists(_events(rng, self.user_ids, at_us), self.artifacts, self.online)
        return time.perf_counter() - started

    def close(self) -> None:
        for stores in (self.stores or {}).values():
            for store in stores:
                store.close()
        shutil.rmtree(self.home, ignore_errors=True)


def measure(sizes: list[int], updates: int, seed: int, log) -> list[dict]:
    """Build every size, then alternate their updates, so the machine's load hits them alike."""
    stores = [_Store(users, seed, log) for users in sizes]
    try:
        rng = random.Random(seed)
        now_us = int(time.time() * 1e6)
        cold = [store.update(rng, now_us) for store in stores]  # opens the snapshot and the store
        warm: list[list[float]] = [[] for _ in stores]
        for i in range(updates):
            for store, times in zip(stores, warm, strict=True):
                times.append(store.update(rng, now_us + 1000 * (i + 1)))
        before = [[store.whole_load_update(rng, now_us + 10**9 + i) for i in range(3)] for store in stores]
        results = []
        for store, first, times, whole in zip(stores, cold, warm, before, strict=True):
            folder = store.home / "artifacts" / "serving_snapshot" / "bench"
            results.append(
                {
                    "users": store.users,
                    "events_per_update": EVENTS_PER_UPDATE,
                    "updates": updates,
                    "cold_s": first,
                    "warm_median_s": float(np.median(times)),
                    "warm_p95_s": float(np.percentile(times, 95)),
                    "whole_snapshot_load_median_s": float(np.median(whole)),
                    "snapshot_mb": sum(p.stat().st_size for p in folder.iterdir()) / 1e6,
                }
            )
            log(json.dumps(results[-1]))
        return results
    finally:
        for store in stores:
            store.close()


def run(ctx):
    from bench.report import Figure, Outcome

    sizes = (ctx.size(10_000, 2_000, "speed_update.small"), ctx.size(1_000_000, 50_000, "speed_update.large"))
    updates = ctx.size(30, 10, "speed_update.updates")
    small, large = measure(list(sizes), updates, ctx.seed, ctx.log)
    ratio = large["warm_median_s"] / small["warm_median_s"]
    return Outcome(
        figures=[
            Figure(
                f"speed update ({EVENTS_PER_UPDATE} events), {sizes[0]:,} users", small["warm_median_s"], "s"
            ),
            Figure(
                f"speed update ({EVENTS_PER_UPDATE} events), {sizes[1]:,} users", large["warm_median_s"], "s"
            ),
            Figure(
                f"speed update time, {sizes[1]:,} / {sizes[0]:,} users",
                ratio,
                "×",
                1.5,
                "at_most",
                reference=f"{sizes[0]:,} users: {small['warm_median_s'] * 1000:.1f} ms (same run)",
            ),
            Figure(
                f"former whole-snapshot update, {sizes[1]:,} users",
                large["whole_snapshot_load_median_s"],
                "s",
            ),
        ],
        details={"small": small, "large": large},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = measure(args.users, args.updates, args.seed, lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

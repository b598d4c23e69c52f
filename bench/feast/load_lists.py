"""Fill a Feast online store with every user's ranked list; runs in the Feast venv.

    python bench/feast/load_lists.py --repo DIR --users 1000000 --list-length 50

The repo is one that `bench/feast_peer.py` wrote and applied. Users `u0000000`.. get `--list-length`
distinct article ids (`a000001`.., as in the endpoint benchmark's store) with descending float32
scores, generated with numpy and written chunk by chunk through `FeatureStore.write_to_online_store`
(Feast's public ingestion path from a pandas frame). The users at the ends of the first and last
chunks are read back through `get_online_features` and compared with what was written. Prints one JSON line:
`{"users": N, "seconds": S}` (the writes alone).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from feast import FeatureStore

FEATURE_VIEW = "user_lists"
N_ARTICLES = 5000
ARTICLE_IDS = np.array([f"a{i + 1:06d}" for i in range(N_ARTICLES)], dtype=object)
# Steps coprime with the article count: a list walking one never repeats an id.
STEPS = np.array([s for s in range(1, 200) if np.gcd(s, N_ARTICLES) == 1])


def user_id(index: int) -> str:
    return f"u{index:07d}"


def generate_chunk(rng: np.random.Generator, start: int, count: int, length: int, computed_at: datetime):
    """`count` users' lists as a frame: distinct article ids per list, scores in descending order."""
    rows = rng.integers(0, N_ARTICLES, count)[:, None] + rng.choice(STEPS, count)[:, None] * np.arange(length)
    scores = -np.sort(-rng.random((count, length), dtype=np.float32) * 4.0, axis=1)
    return pd.DataFrame(
        {
            "user_id": [user_id(i) for i in range(start, start + count)],
            "article_ids": list(ARTICLE_IDS[rows % N_ARTICLES]),
            "scores": list(scores),
            "computed_at": computed_at,
        }
    )


def read_back(store: FeatureStore, written: dict[str, pd.Series]) -> None:
    """Fail unless the online store serves exactly the lists written for these users."""
    features = [f"{FEATURE_VIEW}:article_ids", f"{FEATURE_VIEW}:scores"]
    served = store.get_online_features(
        features=features, entity_rows=[{"user_id": user} for user in written]
    ).to_dict()
    for i, (user, row) in enumerate(written.items()):
        if served["article_ids"][i] != list(row["article_ids"]):
            raise SystemExit(f"{user}: the online store served {served['article_ids'][i]!r}")
        if not np.allclose(served["scores"][i], row["scores"]):
            raise SystemExit(f"{user}: the online store served scores {served['scores'][i]!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", required=True, help="an applied feature repo")
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--list-length", type=int, default=50)
    parser.add_argument("--chunk", type=int, default=20_000, help="users per write_to_online_store call")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.users < 1 or not 1 <= args.list_length <= N_ARTICLES:
        parser.error(f"need --users >= 1 and 1 <= --list-length <= {N_ARTICLES}")

    store = FeatureStore(repo_path=args.repo)
    rng = np.random.default_rng(args.seed)
    computed_at = datetime.now(UTC)
    written: dict[str, pd.Series] = {}
    start_time = time.perf_counter()
    for start in range(0, args.users, args.chunk):
        frame = generate_chunk(rng, start, min(args.chunk, args.users - start), args.list_length, computed_at)
        store.write_to_online_store(FEATURE_VIEW, frame)
        if start == 0 or start + len(frame) == args.users:  # the first and last chunks' ends
            for row in (frame.iloc[0], frame.iloc[-1]):
                written[row["user_id"]] = row
        print(f"feast: {start + len(frame):,} of {args.users:,} users written", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start_time
    read_back(store, written)
    print(json.dumps({"users": args.users, "seconds": round(seconds, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

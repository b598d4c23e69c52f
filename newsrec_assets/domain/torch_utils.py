"""Small torch helpers shared by the text encoder and NAML training (torch only)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["seed_everything", "torch_threads"]


@contextmanager
def torch_threads(num_threads: int | None = None) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(num_threads)``, restoring the old value after.

    ``None`` means one thread per CPU core (2 on the demo machine); more threads than cores only
    adds contention for the intra-op pool.
    """
    n = max(1, int(num_threads or os.cpu_count() or 1))
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, numpy's legacy global and torch; returns a fresh numpy ``Generator`` for ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return np.random.default_rng(seed)

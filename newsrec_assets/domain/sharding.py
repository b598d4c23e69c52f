"""User shards: which slice of the users one batch-layer worker ranks.

A user's shard is a stable hash of the user id: the first 32 bits of its MD5 digest, modulo the
number of shards. MD5 rather than a faster hash because both warehouses compute it in SQL
(DuckDB `md5`, BigQuery `to_hex(md5(...))`), so a shard's reads are filtered in the warehouse and
Python agrees with the SQL filter bit for bit. It partitions users, it protects nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count} does not exist")

    @classmethod
    def from_key(cls, key: str, count: int) -> Shard:
        """From a partition key (`shard_keys`)."""
        return cls(int(key), count)

    def holds(self, user_id: str) -> bool:
        return shard_of(user_id, self.count) == self.index


def user_hash(user_id: str) -> int:
    """The first 32 bits of the user id's MD5 digest, as the warehouses' SQL computes it."""
    return int(hashlib.md5(user_id.encode()).hexdigest()[:8], 16)


def shard_of(user_id: str, count: int) -> int:
    return user_hash(user_id) % count


def shard_keys(count: int) -> list[str]:
    """The partition keys of `count` shards: "0" ... "count-1"."""
    return [str(index) for index in range(count)]

"""Progress bars for work stopped by a wall-clock budget.

A loop that runs "up to N steps or T seconds, whichever comes first" is almost always stopped by
the budget here (e.g. the encoder's 1,000 steps never fit its 150 s). A bar counting steps then
shows a fraction and an ETA that never happen; this bar counts the budget's seconds instead and
shows the steps beside it.
"""

from __future__ import annotations

import time
from typing import IO

from tqdm.auto import tqdm


class BudgetBar:
    """A tqdm bar over `budget_s` seconds, advanced with `step()`, the steps done as its postfix."""

    def __init__(
        self,
        desc: str,
        budget_s: float,
        max_steps: int,
        enabled: bool = True,
        file: IO[str] | None = None,
        clock=time.perf_counter,
    ) -> None:
        self._clock, self._started, self._max_steps, self.steps = clock, clock(), max_steps, 0
        self._bar = tqdm(
            total=round(budget_s),
            desc=desc,
            disable=not enabled,
            leave=False,
            file=file,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of its time budget{postfix}",
        )
        self._bar.set_postfix_str(f"step 0 (at most {max_steps})", refresh=False)

    def step(self) -> None:
        self.steps += 1
        self._bar.n = min(self._bar.total, self._clock() - self._started)
        self._bar.set_postfix_str(f"step {self.steps} (at most {self._max_steps})")

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> BudgetBar:
        return self

    def __exit__(self, *_) -> None:
        self.close()

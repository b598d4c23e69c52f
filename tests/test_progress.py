"""The budget bar shows the time budget that stops a loop, not the step count that never does."""

import io

from newsrec_assets.domain.progress import BudgetBar


def test_budget_bar_counts_the_budget_and_shows_steps_beside_it():
    now = [0.0]
    out = io.StringIO()
    with BudgetBar("SimCSE", budget_s=150, max_steps=1000, file=out, clock=lambda: now[0]) as bar:
        for _ in range(3):
            now[0] += 30.0
            bar.step()
        text = out.getvalue().split("\r")[-1]
    assert "90/150 s of its time budget" in text
    assert "step 3 (at most 1000)" in text
    assert "/1000" not in text  # no step fraction, no step-based ETA
    assert " 60%" in text


def test_budget_bar_never_runs_past_its_budget():
    now = [0.0]
    out = io.StringIO()
    bar = BudgetBar("x", budget_s=10, max_steps=5, file=out, clock=lambda: now[0])
    now[0] = 25.0
    bar.step()
    assert "10/10 s" in out.getvalue().split("\r")[-1]
    bar.close()

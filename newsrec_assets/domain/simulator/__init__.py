"""A simulated news app: its database's change stream (Datastream JSONL) plus the ground truth.

It stands in for the app's operational database and its CDC stream. Batch mode writes days of
history (`simulate_history` + `write_history`); live mode (`LiveSimulator`) continues from the saved
state at wall-clock time. `ClickOracle.load(ground_truth)` gives the true click probabilities.
"""

from newsrec_assets.domain.simulator.click_model import ClickModelParams, ClickOracle
from newsrec_assets.domain.simulator.ground_truth import load_true_view_events
from newsrec_assets.domain.simulator.history import (
    History,
    SimulationConfig,
    simulate_history,
    write_history,
)
from newsrec_assets.domain.simulator.live import LiveSettings, LiveSimulator

__all__ = [
    "ClickModelParams",
    "ClickOracle",
    "History",
    "LiveSettings",
    "LiveSimulator",
    "SimulationConfig",
    "load_true_view_events",
    "simulate_history",
    "write_history",
]

"""The fault suite's scenario table: every check records expected and observed, printed at the end.

`pytest -m faults` prints the table (the issue's "Must show"); docs/reliability.md keeps a copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class Scenario:
    fault: str
    expected: Any
    observed: Any

    @property
    def holds(self) -> bool:
        return self.expected == self.observed


class ScenarioTable:
    """Collects scenarios; `verify()` fails the test on any mismatch after recording them all."""

    rows: list[Scenario] = []  # the whole session's, for the summary

    def __init__(self) -> None:
        self.mine: list[Scenario] = []

    def check(self, fault: str, expected: Any, observed: Any) -> None:
        scenario = Scenario(fault, expected, observed)
        self.mine.append(scenario)
        ScenarioTable.rows.append(scenario)

    def verify(self) -> None:
        failed = [s for s in self.mine if not s.holds]
        assert not failed, "\n".join(
            f"{s.fault}: expected {s.expected!r}, observed {s.observed!r}" for s in failed
        )


@pytest.fixture
def scenarios() -> ScenarioTable:
    return ScenarioTable()


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def pytest_terminal_summary(terminalreporter) -> None:
    if not ScenarioTable.rows:
        return
    terminalreporter.section("fault scenarios (expected vs observed)")
    terminalreporter.write_line("| fault | expected | observed | |")
    terminalreporter.write_line("|---|---|---|---|")
    for s in ScenarioTable.rows:
        verdict = "ok" if s.holds else "MISMATCH"
        terminalreporter.write_line(
            f"| {_cell(s.fault)} | {_cell(s.expected)} | {_cell(s.observed)} | {verdict} |"
        )

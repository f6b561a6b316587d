"""Prints the quick pass's summary (seeds, time, known defects seen) after the tests."""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.simulation.test_protocol import SUMMARY

    if SUMMARY:
        terminalreporter.section("protocol simulation (quick pass)")
        for line in SUMMARY:
            terminalreporter.write_line(line)

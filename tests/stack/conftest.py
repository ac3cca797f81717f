"""On a failing stack test, append the supervisor's log tail of every stack the module started
to the failure report, so that a crash, a restart or a health timeout can be read there."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

_LOGS = pytest.StashKey[list[Path]]()
TAIL_LINES = 40


@pytest.fixture(scope="session")
def stack_log_dirs(pytestconfig: pytest.Config) -> list[Path]:
    """Fixtures that start a stack add its logs directory here."""
    return pytestconfig.stash.setdefault(_LOGS, [])


def supervisor_tail(logs: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = (logs / "supervisor.log").read_text(errors="replace")
    except OSError as exc:
        return f"(no supervisor log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    report = yield
    if report.failed:
        for logs in item.config.stash.get(_LOGS, []):
            report.sections.append((f"supervisor log tail ({logs})", supervisor_tail(logs)))
    return report

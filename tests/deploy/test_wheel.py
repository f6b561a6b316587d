"""The wheel `pip wheel .` builds: the client, the CLI as `task-runner`, the dashboard's
files; not the task types, the Lambda handler, tests or tooling; its dependencies the
runtime's, with moto and the dashboard's only as extras, each admitting the version
requirements*.txt pin."""

from __future__ import annotations

import re
import tomllib
import zipfile
from email.parser import Parser

from tests.wheel import ROOT, built_wheel


def pins(name: str) -> dict[str, str]:
    found = {}
    for line in (ROOT / name).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^]]*\])?==([^\s#]+)", line)
        if match:
            found[match.group(1).lower()] = match.group(3)
    return found


def test_the_wheel_carries_the_runner_and_its_dashboard_files_and_nothing_else() -> None:
    with zipfile.ZipFile(built_wheel()) as wheel:
        names = wheel.namelist()
        entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt")))

    tops = {n.split("/")[0] for n in names}
    assert tops == {"runner", "task_runner-0.1.0.dist-info"}
    assert "runner/client.py" in names and "runner/cli.py" in names
    assert "runner/dashboard/templates/task.html" in names
    assert "runner/dashboard/static/htmx.min.js" in names
    assert "runner/local/server.py" in names  # its dependencies are the [local] extra
    assert b"task-runner = runner.cli:main" in entry_points


def test_its_dependencies_are_the_runtimes_and_the_rest_are_extras() -> None:
    with zipfile.ZipFile(built_wheel()) as wheel:
        metadata = wheel.read("task_runner-0.1.0.dist-info/METADATA").decode()
    requires = Parser().parsestr(metadata).get_all("Requires-Dist") or []
    core = {re.split(r"[<>=\[; ]", r)[0].lower() for r in requires if "extra ==" not in r}
    extras = {
        re.split(r"[<>=\[; ]", r)[0].lower(): r.split('extra == "')[1].rstrip('"')
        for r in requires
        if "extra ==" in r
    }

    assert core == set(pins("requirements.txt"))
    assert extras == {"moto": "local"} | dict.fromkeys(
        pins("requirements-dashboard.txt"), "dashboard"
    )


def test_each_range_admits_the_pinned_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    declared = [*project["dependencies"], *extras]
    pinned = (
        pins("requirements.txt") | pins("requirements-dashboard.txt") | pins("requirements-dev.txt")
    )
    for requirement in declared:
        name = re.split(r"[<>=\[; ]", requirement)[0].lower()
        low = re.search(r">=([\d.]+)", requirement)
        assert low, f"{requirement}: give a lower bound"
        assert low.group(1) == pinned[name], (
            f"{requirement}: the lower bound is not the pin {pinned[name]}"
        )
        assert re.search(r",<[\d.]+", requirement), f"{requirement}: bound the next major"


def test_the_wheel_says_its_types_are_checked() -> None:
    # PEP 561: a producer's mypy reads the client's annotations only with py.typed
    with zipfile.ZipFile(built_wheel()) as wheel:
        assert "runner/py.typed" in wheel.namelist()


def test_no_hint_tells_anyone_to_install_the_name_from_pypi() -> None:
    # `task-runner` on PyPI is an unrelated package: every install hint names this
    # repository (a path or "."), never the bare distribution name
    bare = re.compile(r"pip install\s+['\"]?task-runner\b")
    sources = [*ROOT.glob("runner/**/*.py"), ROOT / "README.md", ROOT / "docs" / "DEPLOY.md"]
    offending = [str(p) for p in sources if bare.search(p.read_text())]
    assert offending == []
    from runner.local.dashboard import NOT_INSTALLED

    assert "pip install '.[dashboard]'" in NOT_INSTALLED

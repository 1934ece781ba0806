"""Tests never touch the user's home: the whole session runs with HOME, the XDG folders,
the feature cache, torch hub, Hugging Face and matplotlib pointed at a temporary folder
(tests/conftest.py, set before any fixture runs)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import ISOLATED_ENVIRONMENT, SESSION_HOME

from benchmarks.cache import resolve_directory

REPOSITORY = Path(__file__).resolve().parents[1]


def test_every_default_path_is_under_the_session_folder(tmp_path_factory):
    for name in set(ISOLATED_ENVIRONMENT) - {"HEADBENCH_CACHE"}:
        assert Path(os.environ[name]).is_relative_to(SESSION_HOME), name
    assert Path.home() == SESSION_HOME
    # Each test's own feature cache (the autouse fixture) is under pytest's temporary root.
    assert resolve_directory().is_relative_to(tmp_path_factory.getbasetemp())


def test_a_module_scoped_fixture_that_runs_the_cli_leaves_the_users_home_empty(tmp_path):
    """The case issue 13 found: `digits_results` (module scope) runs the demo before any
    function-scoped fixture; its backbone and features once landed in ~/.cache."""
    home = tmp_path / "home"
    cache = tmp_path / "xdg-cache"
    home.mkdir()
    cache.mkdir()
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ISOLATED_ENVIRONMENT  # as a user's shell has them: none set
    }
    environment.update(HOME=str(home), XDG_CACHE_HOME=str(cache), PYTHONPATH=str(REPOSITORY))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_reports_cli.py", "-k", "digits",
         "-p", "no:cacheprovider"],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.search(r"\b[1-9]\d* passed", result.stdout), result.stdout  # it ran the demo
    assert sorted(home.rglob("*")) == []
    assert sorted(cache.rglob("*")) == []

"""How to cite headbench, and the papers of the strategies a report shows."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from reports.records import Benchmark

TITLE = "headbench"  # as in CITATION.cff
AUTHORS = "headbench developers"


def headbench_version() -> str:
    """The installed package's version (the one in pyproject.toml and CITATION.cff)."""
    try:
        return version("headbench")
    except PackageNotFoundError:
        return "unknown"


def how_to_cite(package_version: str) -> str:
    """One sentence: who, what, which version, and where the citation metadata lives."""
    return (
        f"{AUTHORS}, {TITLE}: benchmarks for head-only class-incremental learning, software, "
        f"version {package_version}, MIT licence (citation metadata: CITATION.cff at the top "
        "of the headbench repository)"
    )


def made_with(package_version: str) -> str:
    """The line every report ends with: the version that made it and how to cite it."""
    return f"Made with headbench {package_version}. Cite it as: {how_to_cite(package_version)}."


def strategy_papers(benchmarks: list[Benchmark]) -> list[tuple[str, str]]:
    """(strategy, paper) of every strategy shown, in order of first appearance."""
    papers: dict[str, str] = {}
    for benchmark in benchmarks:
        for variant in benchmark.variants:
            name = variant.name.split(" [")[0] if variant.name else variant.strategy
            shown = name if name == variant.strategy else f"{name} ({variant.strategy})"
            papers.setdefault(shown, variant.paper or "no paper recorded")
    return list(papers.items())


def run_versions(benchmarks: list[Benchmark]) -> list[str]:
    """The distinct `headbench X (git Y)` versions that produced the runs shown."""
    seen: dict[str, None] = {}
    for benchmark in benchmarks:
        for variant in benchmark.variants:
            for run in variant.runs:
                environment = run.record.get("environment") or {}
                text = f"headbench {environment.get('headbench') or 'unknown'}"
                if environment.get("git"):
                    text += f" (git {environment['git']})"
                seen.setdefault(text, None)
    return list(seen)

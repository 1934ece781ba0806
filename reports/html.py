"""The self-contained HTML report: one file, images embedded as data: URIs, no network.

It shows what a reader of a paper's appendix needs: the benchmark (dataset, backbone,
class order, protocol), the summary tables, every figure, per-run details and the
environment the runs came from, and how to cite headbench and the strategies' papers.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from html import escape
from typing import Any

from reports.aggregate import describe, step_values
from reports.metrics import REPORT_METRICS, report_metrics
from reports.records import Benchmark

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.4; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #444; }
caption { caption-side: top; text-align: left; font-size: 0.9em; color: #444; padding: 0.3em 0; }
table.summary td { white-space: nowrap; }
td.text, th.text { text-align: left; }
.ci { color: #666; font-size: 0.8em; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; max-width: 48%; }
figure.wide { max-width: 100%; }
figure img { max-width: 100%; }
figcaption { font-size: 0.85em; color: #444; }
.note { background: #fff4d6; padding: 0.4em 0.8em; border-left: 4px solid #e69f00; }
.cite { background: #eef5fb; padding: 0.6em 1em; border-left: 4px solid #0072b2; }
code, pre { font-size: 0.85em; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: bold; }
dd { margin: 0; }
"""


@dataclass(frozen=True)
class EmbeddedFigure:
    """A figure as the report shows it: title, what it shows, PNG bytes."""

    title: str
    caption: str
    png: bytes
    wide: bool = False


@dataclass(frozen=True)
class BenchmarkSection:
    """What the HTML report shows for one benchmark."""

    benchmark: Benchmark
    description: str
    table: str  # HTML of the summary table (absent in wide mode: shown once above)
    notes: list[str]
    figures: list[EmbeddedFigure]


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _json(value: Any) -> str:
    return escape(json.dumps(value))


def _definitions(items: dict[str, Any]) -> str:
    rows = "".join(
        f"<dt>{escape(str(key))}</dt><dd><code>{_json(value)}</code></dd>"
        for key, value in items.items()
    )
    return f"<dl>{rows}</dl>"


def _percent(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _benchmark_description(benchmark: Benchmark) -> str:
    config = benchmark.config
    record = benchmark.first.record
    names = record.get("class_names")
    experiences = []
    for index, classes in enumerate(benchmark.experiences):
        shown = [str(names[c]) if names and isinstance(c, int) else str(c) for c in classes]
        text = ", ".join(shown[:20]) + (f", … ({len(shown)} classes)" if len(shown) > 20 else "")
        experiences.append(f"<li>experience {index + 1}: {escape(text)}</li>")
    parts = [
        "<h3>Benchmark</h3>",
        _definitions(
            {
                "dataset": config.get("dataset", {}),
                "backbone (frozen)": config.get("backbone", {}),
                "head": config.get("head", {}),
                "scenario": config.get("scenario", {}),
                "class order (resolved)": record.get("class_order"),
                "protocol (training)": config.get("training", {}),
                "seeds": benchmark.seeds,
                "test samples per experience": record.get("test_counts"),
            }
        ),
        "<details><summary>Classes of each experience</summary><ul>",
        *experiences,
        "</ul></details>",
        "<h3>Strategies</h3>",
        '<table><thead><tr><th>strategy</th><th class="text">hyperparameters</th>'
        '<th class="text">paper</th>'
        "<th>seeds</th><th>missing seeds</th></tr></thead><tbody>",
    ]
    for variant in benchmark.variants:
        missing = benchmark.missing_seeds(variant)
        parts.append(
            f'<tr><td>{escape(_named(variant))}</td><td class="text">'
            f"<code>{_json(variant.hyperparameters)}</code></td>"
            f'<td class="text">{escape(variant.paper or "no paper recorded")}</td>'
            f"<td>{', '.join(map(str, variant.seeds))}</td>"
            f"<td>{', '.join(map(str, missing)) or '–'}</td></tr>"
        )
    parts.append("</tbody></table>")
    return "\n".join(parts)


def _named(variant) -> str:
    """`WA (weight_aligning)`: the printed name and the registry label, when they differ."""
    name = variant.name or variant.label
    return name if name == variant.label else f"{name} ({variant.label})"


def _old_new_table(benchmark: Benchmark) -> str:
    header = "".join(
        f"<th>{index}<br>({seen} classes)</th>"
        for index, seen in enumerate(benchmark.classes_seen, start=1)
    )
    parts = [
        "<table><caption>Accuracy on old / new classes after each experience (%, mean over "
        "seeds; columns: experience 1..T and the classes seen after it)</caption>",
        f"<thead><tr><th>strategy</th>{header}</tr></thead><tbody>",
    ]
    for variant in benchmark.variants:
        values = step_values(variant)
        cells = []
        for index in range(len(benchmark.classes_seen)):
            old = describe([run[index] for run in values["old_accuracy"]]).mean
            new = describe([run[index] for run in values["new_accuracy"]]).mean
            cells.append(f"<td>{_percent(old)} / {_percent(new)}</td>")
        parts.append(f"<tr><td>{escape(variant.name or variant.label)}</td>{''.join(cells)}</tr>")
    parts.append("</tbody></table>")
    return "\n".join(parts)


def _runs_table(benchmark: Benchmark) -> str:
    metric_headers = "".join(f"<th>{escape(name)}</th>" for name, _ in REPORT_METRICS.values())
    parts = [
        "<table><caption>Every run (metrics recomputed from its accuracy matrix; %, pp)</caption>",
        f'<thead><tr><th>run</th><th class="text">strategy</th><th>seed</th>{metric_headers}'
        "<th>newest share, last</th><th>train s</th><th>device</th></tr></thead><tbody>",
    ]
    for variant in benchmark.variants:
        for run in variant.runs:
            metrics = report_metrics(run.matrix, run.counts)
            shares = run.record.get("newest_share")
            seconds = (run.record.get("seconds") or {}).get("train")
            environment = run.record.get("environment") or {}
            parts.append(
                f"<tr><td><code>{escape(run.run_id)}</code></td>"
                f'<td class="text">{escape(variant.label)}</td>'
                f"<td>{run.seed}</td>"
                + "".join(f"<td>{_percent(metrics[key])}</td>" for key in REPORT_METRICS)
                + f"<td>{_percent(shares[-1]) if shares else 'n/a'}</td>"
                f"<td>{'n/a' if seconds is None else f'{seconds:.2f}'}</td>"
                f"<td>{escape(str(environment.get('device', 'n/a')))}</td></tr>"
            )
    parts.append("</tbody></table>")
    return "\n".join(parts)


ENVIRONMENT_KEYS = (
    "headbench",
    "git",
    "python",
    "torch",
    "numpy",
    "device",
    "device_name",
    "platform",
)


def _environment_table(benchmarks: list[Benchmark]) -> str:
    combos: dict[str, int] = {}
    for benchmark in benchmarks:
        for variant in benchmark.variants:
            for run in variant.runs:
                environment = run.record.get("environment") or {}
                key = json.dumps([environment.get(k) for k in ENVIRONMENT_KEYS])
                combos[key] = combos.get(key, 0) + 1
    header = "".join(f"<th>{k}</th>" for k in ENVIRONMENT_KEYS)
    parts = [f"<table><thead><tr>{header}<th>runs</th></tr></thead><tbody>"]
    for key, count in combos.items():
        values = json.loads(key)
        cells = "".join(f"<td>{escape(str(v if v else 'n/a'))}</td>" for v in values)
        parts.append(f"<tr>{cells}<td>{count}</td></tr>")
    parts.append("</tbody></table>")
    return "\n".join(parts)


def _figure(figure: EmbeddedFigure) -> str:
    kind = ' class="wide"' if figure.wide else ""
    return (
        f'<figure{kind}><img src="{data_uri(figure.png)}" alt="{escape(figure.title)}">'
        f"<figcaption><strong>{escape(figure.title)}.</strong> {escape(figure.caption)}"
        "</figcaption></figure>"
    )


def html_report(
    title: str,
    source: str,
    sections: list[BenchmarkSection],
    wide_table: str | None,
    units: str,
    papers: list[tuple[str, str]],
    made_with: str,
    run_versions: list[str],
) -> str:
    """The whole page as a string; every image inline, no external reference."""
    benchmarks = [section.benchmark for section in sections]
    runs = sum(len(v.runs) for b in benchmarks for v in b.variants)
    body = [
        f"<h1>{escape(title)}</h1>",
        f"<p>{runs} runs from <code>{escape(source)}</code>, {len(sections)} benchmark(s). "
        f"{escape(units)}.</p>",
        f'<p class="cite">{escape(made_with)}</p>',
    ]
    if wide_table:
        body += ["<h2>All benchmarks</h2>", wide_table]
    for section in sections:
        benchmark = section.benchmark
        body += [
            f'<section id="{escape(benchmark.label)}">',
            f"<h2>{escape(benchmark.label)}</h2>",
            # The table's caption describes the benchmark; in wide mode the table is above.
            section.table or f"<p>{escape(section.description)}</p>",
            *(f'<p class="note">{escape(note)}</p>' for note in section.notes),
            _old_new_table(benchmark),
            "<h3>Figures</h3>",
            *(_figure(figure) for figure in section.figures),
            _benchmark_description(benchmark),
            "<h3>Runs</h3>",
            _runs_table(benchmark),
            "</section>",
        ]
    body += [
        "<h2>Environment</h2>",
        "<p>Where and with what the runs were made (one row per distinct environment).</p>",
        _environment_table(benchmarks),
        "<h2>How to cite</h2>",
        f'<p class="cite">{escape(made_with)} Runs made with: '
        f"{escape(', '.join(run_versions))}.</p>",
        "<p>Papers of the strategies shown:</p><ul>",
        *(f"<li><strong>{escape(name)}</strong>: {escape(paper)}</li>" for name, paper in papers),
        "</ul>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )

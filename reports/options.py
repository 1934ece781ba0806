"""The report command's options, light to import (the CLI's parser needs only these)."""

from __future__ import annotations

import argparse

from reports.records import ReportError

FORMATS = ("md", "latex", "csv", "html", "png", "pdf", "svg")
DEFAULT_FORMATS = ("md", "latex", "csv", "html", "png", "pdf")
BY_CHOICES = ("benchmark",)
NAMES_CHOICES = ("display", "registry")
BAND_CHOICES = ("ci95", "std", "none")


def parse_formats(text: str | None) -> list[str]:
    """`md,latex,...` (or `all`, or None for the default set) -> the formats, checked."""
    if text is None or text.strip() == "all":
        return list(DEFAULT_FORMATS)
    requested = [item.strip().lower() for item in text.split(",") if item.strip()]
    unknown = [item for item in requested if item not in FORMATS]
    if unknown or not requested:
        raise ReportError(
            f"--format {text!r}: unknown format {', '.join(unknown) or '(none given)'}; "
            f"accepted: a comma-separated list of {', '.join(FORMATS)}, or all"
        )
    return list(dict.fromkeys(requested))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The report command's arguments (shared by `headbench report` and `python -m reports`)."""
    parser.add_argument(
        "results", metavar="RESULTS_DIR", help="a folder of run records (runs/*.json below it)"
    )
    parser.add_argument("--out", help="where to write the report (default: RESULTS_DIR/report)")
    parser.add_argument(
        "--format",
        dest="formats",
        metavar="FORMATS",
        help=f"comma-separated, of {','.join(FORMATS)} (default: {','.join(DEFAULT_FORMATS)})",
    )
    parser.add_argument(
        "--by",
        choices=BY_CHOICES,
        help="one wide table with a column group per benchmark (default: a table each)",
    )
    parser.add_argument(
        "--names",
        choices=NAMES_CHOICES,
        default="display",
        help="strategy names as papers print them (display: WA, LwF, ...; the default) or "
        "the registry keys (registry: weight_aligning, lwf, ...)",
    )
    parser.add_argument(
        "--band",
        choices=BAND_CHOICES,
        default="ci95",
        help="the band around each curve and the error bars: ci95 (95%% Student-t "
        "interval over seeds; the default), std (± one standard deviation) or none",
    )

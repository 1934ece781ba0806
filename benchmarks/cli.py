"""The `headbench` command (also `python -m benchmarks`): run, sweep, tune, reproduce,
report, list, cache.

Bad input of any kind ends in one line on stderr and exit status 2, with nothing
written; Ctrl-C keeps every finished run's record and exits with 130. A run whose loss
diverges is listed under the table and the others go on; the exit status is then 1, as
it is when `run --max-old-drop P` flags a run whose old-label accuracy fell by more than P.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmarks.errors import UsageError
from reports.options import add_arguments


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(2, f"headbench: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="headbench", description="Head-only class-incremental learning benchmarks."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run strategies over seeds on a benchmark config")
    run.add_argument(
        "config", help="a config file, or the name of a shipped config (headbench list configs)"
    )
    run.add_argument(
        "--strategy",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this strategy (repeatable; 'all' for every registered one)",
    )
    run.add_argument("--seeds", help="seed ids: a range 0-4, a list 0,2,7 or one id")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="override a config value, e.g. training.epochs=20 or strategies.ewc.lambda=1000",
    )
    run.add_argument("--out", help="results directory (default: results/<config name>)")
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    run.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    run.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="feature cache (default: $HEADBENCH_CACHE, else ~/.cache/headbench)",
    )
    run.add_argument(
        "--no-cache", action="store_true", help="compute features without reading or writing it"
    )
    run.add_argument(
        "--batch-seeds",
        action="store_true",
        help="train each strategy's seeds as one batched computation (same results; it "
        "shares per-step overhead, which pays where that dominates: README)",
    )
    run.add_argument(
        "--max-old-drop",
        type=_points,
        metavar="P",
        help="old-label gate: list the runs whose accuracy on the classes seen before an "
        "experience fell by more than P percentage points across it, and exit with 1 "
        "(docs/running.md)",
    )

    sweep = commands.add_parser(
        "sweep", help="configs × grid × strategies × seeds; resumable, in N worker processes"
    )
    sweep.add_argument("configs", nargs="+", metavar="CONFIG", help="config files or names")
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="values to sweep, e.g. strategies.ewc.lambda=100,1000 (repeatable: a product)",
    )
    _share_options(
        run, sweep, ("--strategy", "--seeds", "--set", "--device", "--quiet", "--cache-dir")
    )
    sweep.add_argument("--out", required=True, help="results directory (shared by resumes)")
    sweep.add_argument(
        "--workers", type=int, default=1, help="worker processes (default 1: in this process)"
    )
    sweep.add_argument(
        "--retry-failed", action="store_true", help="run again the runs recorded as failed"
    )
    sweep.add_argument(
        "--executor",
        default="local",
        choices=("local", "ray"),
        help="local worker processes (default) or tasks on a Ray cluster (pip extra 'ray')",
    )
    sweep.add_argument(
        "--address", default="auto", help="the Ray cluster (default auto: the running one)"
    )
    sweep.add_argument(
        "--gpus-per-run",
        type=float,
        help="Ray: GPU fraction per run (default 1/8 where the cluster has GPUs, else 0)",
    )

    tune = commands.add_parser(
        "tune", help="choose hyperparameters on a validation split, then run them on test"
    )
    tune.add_argument("config", help="a config file or the name of a shipped config")
    tune.add_argument("--strategy", required=True, metavar="NAME", help="the strategy to tune")
    tune.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY=V1,V2",
        help="values to try, e.g. strategies.ewc.lambda=100,1000 (repeatable: a product)",
    )
    tune.add_argument(
        "--validation-fraction",
        type=float,
        help="share of each class's training samples held out (default 0.2); refused for a "
        "dataset with its own validation split, which tune then uses",
    )
    tune.add_argument("--validation-seed", type=int, help="seed of that held-out split (default 0)")
    tune.add_argument(
        "--criterion", default="final_accuracy", help="metric to optimise (default final_accuracy)"
    )
    tune.add_argument(
        "--first-experiences",
        type=int,
        metavar="K",
        help="tune on the first K experiences only (Chaudhry et al. 2019)",
    )
    _share_options(run, tune, ("--seeds", "--set", "--device", "--quiet", "--cache-dir"))
    tune.add_argument("--out", required=True, help="results directory")

    reproduce = commands.add_parser(
        "reproduce", help="re-run recorded runs and report per-cell differences"
    )
    reproduce.add_argument("records", type=Path, help="a run record, or a results folder")
    reproduce.add_argument(
        "--tolerance",
        type=float,
        help="allowed |difference| per cell in points (default 0 on CPU, 1 for CUDA records)",
    )
    reproduce.add_argument(
        "--trust-record",
        action="store_true",
        help="run records that name code (an Avalanche benchmark's module:callable, "
        "unchecked pickled dataset files); only for records you would run yourself",
    )
    _share_options(run, reproduce, ("--device", "--quiet", "--cache-dir"))

    report = commands.add_parser(
        "report", help="tables, plots and an HTML report from a folder of run records"
    )
    add_arguments(report)

    listing = commands.add_parser("list", help="show strategies, datasets, backbones and configs")
    listing.add_argument(
        "section", nargs="?", choices=("strategies", "datasets", "backbones", "configs")
    )

    cache = commands.add_parser("cache", help="list or clear the feature cache")
    actions = cache.add_subparsers(dest="action", required=True, parser_class=_Parser)
    for action, text in (("ls", "list the entries with their sizes"), ("clear", "remove entries")):
        command = actions.add_parser(action, help=text)
        command.add_argument(
            "--cache-dir",
            metavar="DIR",
            help="the cache (default: $HEADBENCH_CACHE, else ~/.cache/headbench)",
        )
        if action == "clear":
            command.add_argument(
                "--older-than",
                type=_days,
                metavar="DAYS",
                help="only entries not used for more than DAYS days (fractions accepted)",
            )
    return parser


def _share_options(
    source: argparse.ArgumentParser, target: argparse.ArgumentParser, options: tuple[str, ...]
) -> None:
    """Give `target` the same options as `source` (one definition, one help text)."""
    for option in options:
        target._add_action(next(a for a in source._actions if option in a.option_strings))


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days >= 0 or days == float("inf"):
        raise argparse.ArgumentTypeError(
            f"--older-than {text!r} is not accepted; give a number of days >= 0"
        )
    return days


def _points(text: str) -> float:
    try:
        points = float(text)
    except ValueError:
        points = -1.0
    if not 0 <= points <= 100:  # NaN fails both
        raise argparse.ArgumentTypeError(
            f"{text!r} is not accepted; give percentage points in [0, 100]"
        )
    return points


def command_run(args: argparse.Namespace) -> int:
    from benchmarks import run
    from benchmarks.progress import Progress

    plan = run.plan(
        args.config,
        args.overrides,
        args.strategy,
        args.seeds,
        args.device,
        args.out,
        args.cache_dir,
        not args.no_cache,
    )
    progress = Progress(args.quiet)
    try:
        records, failures, table = run.execute(plan, progress, args.batch_seeds)
    except KeyboardInterrupt:
        written = len(list((plan.out / "runs").glob("*.json")))
        print(
            f"headbench: interrupted; {written} finished run records kept in {plan.out / 'runs'}",
            file=sys.stderr,
        )
        return 130
    run.print_summary(plan, records, table)
    flagged = False
    if args.max_old_drop is not None:
        from reports.old_labels import gate_text

        text, flagged = gate_text(records, args.max_old_drop)
        print(text)
        sys.stdout.flush()
    return 1 if failures or flagged else 0


def command_sweep(args: argparse.Namespace) -> int:
    from benchmarks import run, sweep
    from benchmarks.progress import Progress
    from reports.records import ReportError
    from reports.report import build

    settings = sweep.Settings(
        tuple(args.strategy), args.seeds, args.device, args.out, args.cache_dir, args.retry_failed
    )
    try:
        executor = sweep.Executor(args.executor, args.workers, args.address, args.gpus_per_run)
        outcome = sweep.sweep(
            args.configs, args.grid, args.overrides, settings, executor, Progress(args.quiet)
        )
    except KeyboardInterrupt:
        written = len(list((Path(args.out) / "runs").glob("*.json")))
        print(
            f"headbench: interrupted; {written} run records in {args.out}/runs; run the same "
            "command again to finish the missing runs",
            file=sys.stderr,
        )
        return 130
    try:
        print(build(Path(args.out), []).summary)
    except ReportError as error:
        print(f"(no summary table: {error})")
    if outcome.failures:
        print("Failed runs (recorded in OUT/failed/, not in the table):")
        print("".join(f"- {failure}\n" for failure in outcome.failures), end="")
    held = f", {outcome.held} held by another process" if outcome.held else ""
    print(
        f"sweep: {outcome.total} runs; {outcome.done} runs done now, {outcome.already} already "
        f"recorded, {len(outcome.failures)} failed{held}; records in {args.out}/runs/"
    )
    print(run.report_hint(Path(args.out)))
    return 1 if outcome.failures else 0


def command_tune(args: argparse.Namespace) -> int:
    from benchmarks import run, sweep, tune
    from benchmarks.config import MAX_SEED
    from benchmarks.progress import Progress
    from reports.metrics import METRICS
    from reports.report import build, selection_note

    if args.validation_seed is not None and not 0 <= args.validation_seed <= MAX_SEED:
        raise UsageError(
            f"--validation-seed {args.validation_seed} is not accepted; give 0..{MAX_SEED}"
        )
    settings = sweep.Settings(
        (args.strategy,), args.seeds, args.device, args.out, args.cache_dir, False
    )
    protocol = tune.Protocol(
        args.validation_fraction, args.validation_seed, args.criterion, args.first_experiences
    )
    scores, chosen, records = tune.tune(
        args.config, args.strategy, args.grid, args.overrides, protocol, settings,
        Progress(args.quiet),
    )  # fmt: skip
    better = "higher" if METRICS[protocol.criterion][1] else "lower"
    print(f"validation ({protocol.criterion}, mean over seeds; {better} is better):")
    for point, value in scores:
        mark = "  <- chosen" if point == chosen else ""
        shown = "diverged" if value != value else f"{100 * value:.2f}"
        print(f"  {' '.join(point)}: {shown}{mark}")
    print(f"{args.strategy}: {selection_note(records[0]['selection'])}\n")
    print(build(Path(args.out), []).summary)
    print(run.report_hint(Path(args.out)))
    return 0


def command_reproduce(args: argparse.Namespace) -> int:
    from benchmarks import reproduce
    from benchmarks.progress import Progress

    if args.tolerance is not None and not args.tolerance >= 0:
        raise UsageError(f"--tolerance {args.tolerance} is not accepted; give points >= 0")
    tolerance = None if args.tolerance is None else args.tolerance / 100
    results = reproduce.reproduce(
        reproduce.find_records(args.records),
        args.device,
        args.cache_dir,
        tolerance,
        Progress(args.quiet),
        args.trust_record,
    )
    text, reproduced = reproduce.render(results)
    print(text)
    return 0 if reproduced else 1


def command_list(args: argparse.Namespace) -> int:
    from benchmarks.listing import SECTIONS

    sections = [args.section] if args.section else list(SECTIONS)
    print("\n\n".join(SECTIONS[section]() for section in sections))
    return 0


def command_cache(args: argparse.Namespace) -> int:
    from benchmarks.cache import Cache, human_size, listing, resolve_directory

    directory = resolve_directory(args.cache_dir)
    if directory.is_symlink() and not directory.exists():
        raise UsageError(
            f"cache folder {directory} is a link to {os.readlink(directory)}, which does not "
            "exist; accepted: a folder, a link to one, or none"
        )
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"cache folder {directory} is not a folder; accepted: a folder or none")
    cache = Cache(directory)
    if args.action == "ls":
        print(listing(cache))
        return 0
    removed, freed = cache.clear(args.older_than)
    which = "" if args.older_than is None else f" not used for {args.older_than:g} days"
    print(f"removed {removed} entries{which} from {cache.directory}, freed {human_size(freed)}")
    return 0


def command_report(args: argparse.Namespace) -> int:
    from reports.report import run_command

    return run_command(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "report":  # reads records only: no torch, no strategies
        from reports.records import ReportError

        try:
            return command_report(args)
        except ReportError as error:
            print(f"headbench: error: {error}", file=sys.stderr)
            return 2
    from benchmarks.errors import UsageError
    from strategies import HyperparameterError

    try:
        if args.command == "cache":
            return command_cache(args)
        if args.command == "sweep":
            return command_sweep(args)
        if args.command == "reproduce":
            return command_reproduce(args)
        if args.command == "tune":
            return command_tune(args)
        return command_run(args) if args.command == "run" else command_list(args)
    except (UsageError, HyperparameterError) as error:
        print(f"headbench: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

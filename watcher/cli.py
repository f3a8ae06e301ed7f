"""Command line: thin wrappers that parse flags, call the engine or the daemon, and print.

Exit status: 0 success, 1 the work failed (message on one line), 2 bad usage or settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, get_args

from watcher import __version__
from watcher.config import BlendMethod, ConfigError, FocusMeasure, Settings, load_settings
from watcher.stacking.formats import SUFFIXES


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"focus-watcher: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        sys.stderr.close()
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="focus-watcher", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"focus-watcher {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stack = commands.add_parser("stack", help="fuse one focus stack by hand", description="Fuse one focus stack.")
    stack.add_argument("images", nargs="+", type=Path, metavar="IMG", help="frames, in focus order")
    stack.add_argument("-o", "--output", type=Path, required=True, help="result file (.jpg, .png, .tif)")
    stack.add_argument("--blend", choices=get_args(BlendMethod))
    stack.add_argument("--focus", dest="focus_measure", choices=get_args(FocusMeasure))
    stack.add_argument("--levels", dest="pyramid_levels", type=int, help="ECC pyramid levels 1-6")
    stack.add_argument("--window", dest="focus_window", type=int, help="focus window, odd 3-21")
    stack.add_argument("--align-gradients", dest="align_gradient_percent", type=float, metavar="PERCENT",
                       help="percent of the reference's pixels, strongest gradients first, that alignment uses "
                       "(1-100)")
    # the flag's first name, which reads like a setting of --mask: scripts that use it still run
    stack.add_argument("--mask-threshold", dest="align_gradient_percent", type=float, help=argparse.SUPPRESS)
    stack.add_argument("--sharpen", type=float, help="unsharp mask amount 0-3")
    stack.add_argument("--scales", dest="focus_scales", type=int, help="octaves of the focus measure, 1-6")
    stack.add_argument("--reference", choices=["first", "middle"])
    stack.add_argument("--no-align", dest="align", action="store_false", default=None, help="frames are aligned")
    stack.add_argument("--jpeg-quality", dest="jpeg_quality", type=int)
    stack.add_argument("--depth", dest="output_depth", choices=["auto", "8", "16"], help="output bit depth")
    stack.add_argument("--depthmap", type=Path, metavar="FILE", help="also write the depth map here")
    stack.add_argument("--mask", type=Path, metavar="MASK.png",
                       help="also write the object mask here: 8-bit grey PNG in the result's geometry, 255 where "
                       "the object is (sharp in some frame), 0 for the backdrop; the record's \"mask\" says how "
                       "much of it was inferred")
    stack.add_argument("--json", action="store_true", help="print the stack's record as JSON")
    _add_config_flag(stack)
    stack.set_defaults(handler=_cmd_stack)

    run = commands.add_parser("run", help="watch the hot folder and stack every stack as it completes")
    _add_daemon_flags(run)
    run.set_defaults(handler=_cmd_run, once=False)

    once = commands.add_parser("once", help="stack everything complete now, then exit (cron, scripts)")
    _add_daemon_flags(once)
    once.set_defaults(handler=_cmd_run, once=True)

    status = commands.add_parser("status", help="done/failed/pending counts and the last errors")
    _add_daemon_flags(status)
    status.add_argument("--json", action="store_true", help="print the summary as JSON")
    status.set_defaults(handler=_cmd_status)

    report = commands.add_parser("report", help="rebuild the HTML report (results/index.html) from the records")
    _add_daemon_flags(report)
    report.set_defaults(handler=_cmd_report)

    doctor = commands.add_parser("doctor", help="check this machine's setup: folders, inotify, disk, memory, heat")
    _add_daemon_flags(doctor)
    doctor.set_defaults(handler=_cmd_doctor)

    config = commands.add_parser("config", help="validate and print the effective settings")
    _add_daemon_flags(config)
    config.set_defaults(handler=_cmd_config)
    return parser


def _add_daemon_flags(parser: argparse.ArgumentParser) -> None:
    _add_config_flag(parser)
    parser.add_argument("--hot", dest="hot_folder", type=Path, help="folder to watch (default ./hot)")
    parser.add_argument("--results", dest="results_folder", type=Path, help="results folder (default ./results)")
    parser.add_argument("--workers", type=int, help="worker processes (default: cores - 1)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def _daemon_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for key in ("hot_folder", "results_folder"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.workers is not None:
        overrides["workers"] = {"count": args.workers}
    if args.log_level is not None:
        overrides["logging"] = {"level": args.log_level}
    return load_settings(args.config, overrides)


def _cmd_run(args: argparse.Namespace) -> int:
    from watcher.layout import LOG_NAME
    from watcher.log import configure_logging
    from watcher.service.daemon import Daemon
    from watcher.service.lock import ResultsBusy

    settings = _daemon_settings(args)
    settings.results_folder.mkdir(parents=True, exist_ok=True)
    configure_logging(settings.logging, settings.results_folder / LOG_NAME)
    try:
        daemon = Daemon(settings, once=args.once)
    except ResultsBusy as exc:  # usage: restarting (systemd) or retrying cannot fix it
        print(f"focus-watcher: {exc}", file=sys.stderr)
        return 2
    status = daemon.run()
    if daemon.gave_up:
        print(f"focus-watcher: {daemon.gave_up}", file=sys.stderr)
    return status


def _cmd_doctor(args: argparse.Namespace) -> int:
    from watcher.doctor import print_report, run_checks

    return print_report(run_checks(_daemon_settings(args)))


def _cmd_status(args: argparse.Namespace) -> int:
    from watcher.log import configure_logging
    from watcher.service.status import summarize

    settings = _daemon_settings(args)
    configure_logging(settings.logging, None)  # what the walk logs goes to stderr, never into the JSON on stdout
    summary = summarize(settings)
    if args.json:
        print(json.dumps(dataclasses.asdict(summary), indent=2))
        return 0
    print(f"done {summary.done}  failed {summary.failed}  pending {summary.pending}  unplaced files {summary.unplaced}")
    for scan in summary.scans:
        total = f"/{scan.positions}" if scan.positions else ""
        state = f", scan {scan.status}" if scan.status else ""
        rate = f", {scan.per_minute:g} stacks/min" if scan.per_minute else ""
        eta = f"; all stacked by about {scan.eta[11:16]}" if scan.eta else ""
        print(f"  {scan.scan or '(top folder)'}: {scan.stacked}{total} stacked, {scan.pending} to do{state}{rate}{eta}")
    for finished_at, stack, error in summary.last_errors:
        print(f"  {finished_at}  {stack}: {error}")
    if summary.cluster is not None:
        _print_cluster(summary.cluster)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from watcher.layout import INDEX
    from watcher.log import configure_logging
    from watcher.names import display
    from watcher.report import Report
    from watcher.service.records import RecordStore
    from watcher.service.status import pending_stacks, report_pending

    settings = _daemon_settings(args)
    configure_logging(settings.logging, None)
    if not settings.results_folder.is_dir():
        raise ConfigError(f"results_folder: {settings.results_folder} is not a folder (nothing to report yet)")
    store = RecordStore.of(settings)
    pending = report_pending(store, pending_stacks(settings, store)[0])
    try:
        stats = Report(settings.results_folder, settings.results.layout).rebuild(pending)
    except OSError as exc:
        print(f"focus-watcher: error: cannot write the report: {exc}", file=sys.stderr)
        return 1
    print(f"{display(str(settings.results_folder / INDEX))}: {stats.scans} scans, {stats.stacks} stacks; "
          f"{stats.records_read} records read, {stats.stack_pages + stats.scans_rendered} pages written "
          f"in {stats.seconds:.1f} s")
    for page, reason in stats.failures.items():
        print(f"focus-watcher: error: {display(page)} could not be drawn: {reason}", file=sys.stderr)
    return 1 if stats.failures else 0


def _print_cluster(cluster: dict) -> None:
    if cluster["error"]:
        print(f"cluster {cluster['scheduler']}: unreachable ({cluster['error']})")
        return
    workers = cluster["workers"]
    print(f"cluster {cluster['scheduler']}: {len(workers)} workers, {sum(w['threads'] for w in workers)} threads")
    for worker in workers:
        limit = "no memory limit" if worker["memory_limit_mb"] is None else f"limit {worker['memory_limit_mb']} MiB"
        memory = "takes no stack" if worker["memory_mb"] is None else f"memory {worker['memory_mb']} MiB"
        memory += f", {limit}"
        running = ", ".join(worker["stacks"]) or "idle"
        print(f"  {worker['name']} on {worker['host']} ({worker['threads']} threads, {memory}): {running}")


def _add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, help="TOML settings file")


def _stacking_overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("blend", "focus_measure", "pyramid_levels", "focus_window", "align_gradient_percent", "sharpen",
            "focus_scales", "reference", "align", "jpeg_quality", "output_depth")
    overrides = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    suffix = args.output.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"output: unsupported extension {suffix!r} (use .jpg, .png or .tif)")
    overrides["output_format"] = SUFFIXES[suffix]
    if args.depthmap is not None:
        overrides["depthmap"] = True
    if args.mask is not None and args.mask.suffix.lower() != ".png":
        raise ConfigError(f"mask: the mask is an 8-bit grey PNG, name it .png (got {args.mask.suffix!r})")
    return overrides


def _cmd_stack(args: argparse.Namespace) -> int:
    from watcher.stacking.pipeline import StackError, stack_to_file
    from watcher.stacking.sources import FrameError, FrameUnavailable

    settings = load_settings(args.config, {"stacking": _stacking_overrides(args)}).stacking
    progress = _terminal_progress if sys.stderr.isatty() else None
    try:
        record = stack_to_file(args.images, args.output, settings, depthmap_output=args.depthmap,
                               mask_output=args.mask, progress=progress)
    except (FrameError, FrameUnavailable, StackError, OSError) as exc:
        if progress:
            print(file=sys.stderr)
        print(f"focus-watcher: error: {exc}", file=sys.stderr)
        return 1
    if progress:
        seconds = record["timings"]["total"] + record["timings"]["save"]
        print(f"\rwrote {args.output} in {seconds:.1f} s", file=sys.stderr)
    for warning in record["warnings"]:
        print(f"focus-watcher: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(record, indent=2))
    return 0


def _terminal_progress(stage: str, done: int, total: int) -> None:
    width = 30
    filled = width * done // max(1, total)
    print(f"\r{stage} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)


def _cmd_config(args: argparse.Namespace) -> int:
    settings = _daemon_settings(args)
    print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

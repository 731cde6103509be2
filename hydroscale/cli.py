"""The ``hydroscale`` command line."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    res = run_demo(args.out, substeps=args.substeps, steady_start=not args.dry_start,
                   engine=args.engine)
    print(f"routed {res.n_reaches} reaches x {res.n_steps} steps in {res.seconds:.1f} s "
          f"(engine {res.engine})")
    print(f"discharge: {res.discharge_path}")
    print(f"hydrographs: {res.figure_path}")
    print(f"summary: {res.summary_path}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="hydroscale",
        description="Exact, differentiable river routing for continental networks.",
    )
    ap.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="route the bundled Lower Colorado basin (NWM data) and write discharge + PNG",
        description="Route the bundled Lower Colorado (TX) basin: 11,248 reaches, 28 hours of "
        "NWM lateral inflow, Muskingum; writes discharge.nc, hydrographs.png, summary.json.",
    )
    demo.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    demo.add_argument("--substeps", type=int, default=12, help="routing sub-steps per hour")
    demo.add_argument("--dry-start", action="store_true",
                      help="start with empty rivers instead of the steady state of hour one")
    demo.add_argument("--engine", default=None, help="routing engine (default: best available)")
    demo.set_defaults(func=_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    level = logging.WARNING - 10 * min(2, args.verbose + 1)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        ap.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"hydroscale {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

"""`python -m fedkafka.fuzz`: fuzz a fresh federation (or replay a crash file); exits 1 on any problem."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from fedkafka.fuzz.run import Options, problems, replay, run


def parse(argv: list[str]) -> tuple[argparse.Namespace, Options]:
    p = argparse.ArgumentParser(prog="python -m fedkafka.fuzz", description=__doc__)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--frames", type=int, default=None, help="stop after this many request frames")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default 60, or "
                   "unlimited with --frames)")
    p.add_argument("--connections", type=int, default=32, help="fuzz connections (one asyncio task each; the "
                   "harness waits for answers, so more connections send more frames per second)")
    p.add_argument("--http-rate", type=float, default=10.0, help="HTTP requests per second (controller, name service)")
    p.add_argument("--good-rate", type=float, default=50.0, help="records per second of the well-behaved producer")
    p.add_argument("--clusters", default="", help="id=bootstrap,... of running clusters (default: start two)")
    p.add_argument("--workdir", type=Path, default=None, help="logs, SQLite, corpus (default: a temp dir, kept on "
                   "problems)")
    p.add_argument("--corpus", type=Path, default=None, help="where crash files go (default WORKDIR/corpus)")
    p.add_argument("--report", type=Path, default=None, help="also write the JSON report here")
    p.add_argument("--no-restart", action="store_true", help="leave a dead process dead")
    p.add_argument("--replay", type=Path, default=None, help="replay a crash file's sends one by one")
    args = p.parse_args(argv)
    duration = args.duration if args.duration is not None else (10**9 if args.frames else 60.0)
    clusters = dict(item.split("=", 1) for item in args.clusters.split(",") if item)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fedkafka-fuzz-"))
    return args, Options(seed=args.seed, frames=args.frames, duration=duration, connections=args.connections,
                         http_rate=args.http_rate, good_rate=args.good_rate, workdir=workdir, corpus=args.corpus,
                         clusters=clusters, restart=not args.no_restart)


def main(argv: list[str] | None = None) -> int:
    args, options = parse(sys.argv[1:] if argv is None else argv)
    if args.replay:
        result = replay(options, args.replay)
        print(json.dumps(result, indent=2))
        return 1 if result["killers"] else 0
    rep = run(options)
    found = problems(rep)
    rep["problems"] = found
    rep["workdir"] = str(options.workdir)
    text = json.dumps(rep, indent=2)
    if args.report:
        args.report.write_text(text)
    print(text)
    for line in found:
        print(f"PROBLEM: {line}", file=sys.stderr)
    if not found and args.workdir is None:
        shutil.rmtree(options.workdir, ignore_errors=True)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

"""The `ingest` command.

    ingest run [--ui-port N | --no-ui] [--ui-host H] [--ui-token T] APP.py [ARGS...]
                                    run an application file as __main__, with the web UI
                                    of its StreamingContext at a free port (printed at start)
    ingest run --cluster tcp://HOST:8786 | --workers N [--worker-memory 512MiB] APP.py [ARGS...]
                                    ... with its partition tasks on a Dask cluster (an existing
                                    one, or a local one of N worker processes)
    ingest run --supervise [--max-restarts N] [--restart-window S] [--restart-delay S] APP.py [ARGS...]
                                    ... and restart it with backoff when it fails
    ingest demo [--port 7777]       the seed example against a built-in line generator
    ingest services kafka           a local Kafka broker for development (Ctrl-C stops it)
    ingest services hdfs            a local HDFS (MiniDFSCluster, WebHDFS) for development
    ingest services s3              a local S3-compatible server (moto) for development
    ingest services flume --config FILE [--agent a1] [--plugin-jar JAR]
                                    a local Flume 1.11 agent running FILE (Ctrl-C stops it)
    ingest services image kafka|hdfs|s3|flume
                                    build that service's image (ingest/kafka, ingest/hdfs, ingest/s3,
                                    ingest/flume) on the local Docker engine, without a registry
    ingest checkpoint ls|show|fsck DIR
                                    inspect a checkpoint directory
    ingest --version

Exit codes: 0 success, 1 the job failed, 2 bad usage or configuration, 141 the reader
of the output went away (e.g. `ingest checkpoint ls DIR | head`: the rest is dropped
quietly, as a command killed by SIGPIPE would).
"""

from __future__ import annotations

import argparse
import logging
import os
import runpy
import sys
from dataclasses import replace
from typing import Sequence

from ingest import __version__
from ingest.cli_traceback import print_user_traceback
from ingest.errors import ConfigError, IngestError
from ingest.ui.options import resolve as resolve_ui
from ingest.ui.options import set_process_default

EXIT_BROKEN_PIPE = 128 + 13  # the shell's code for a command ended by SIGPIPE


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def _check_app_file(app: str, path: str) -> None:
    """An app file that is missing or does not compile is a usage error naming the
    file (and the line), not a traceback through runpy."""
    if os.path.isdir(path):
        raise ConfigError(f"application file {app!r} is a directory: give `ingest run` the Python file that "
                          "builds and starts the StreamingContext")
    if not os.path.isfile(path):
        raise ConfigError(f"application file {app!r} does not exist (looked for {path}): check the path given "
                          "to `ingest run`")
    with open(path, "rb") as f:
        source = f.read()
    try:
        compile(source, path, "exec")
    except SyntaxError as exc:
        where = f"{app}, line {exc.lineno}" if exc.lineno else app
        text = f"\n    {exc.text.rstrip()}" if exc.text else ""
        raise ConfigError(f"application file {where}: {type(exc).__name__}: {exc.msg}{text}\n"
                          "fix the file and run it again") from None


def _cmd_run(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.app)
    _check_app_file(args.app, path)
    if args.supervise:
        from ingest.supervise import RestartPolicy, supervise

        policy = RestartPolicy(args.max_restarts, args.restart_window, args.restart_delay)
        return supervise(args.argv, args.app, policy)  # the child gets the --ui-* options
    if args.no_ui:
        set_process_default(None)
    else:
        options = resolve_ui(args.ui_port, args.ui_host, args.ui_token)
        assert options is not None  # a port was given
        set_process_default(replace(options, announce=True))
    sys.argv = [path, *args.args]
    sys.path.insert(0, os.path.dirname(path))
    try:
        if args.cluster is None and args.workers is None:
            runpy.run_path(path, run_name="__main__")
            return 0
        from ingest.cluster import ClusterSession
        from ingest.cluster import set_process_default as set_cluster_default

        if args.cluster is not None and args.workers is not None:
            raise ConfigError("give either --cluster ADDRESS (an existing Dask scheduler) or --workers N "
                              "(a local cluster of N worker processes), not both")
        with ClusterSession(address=args.cluster, workers=args.workers,
                            memory_limit=args.worker_memory) as override:
            set_cluster_default(override)
            try:
                runpy.run_path(path, run_name="__main__")
            finally:
                set_cluster_default(None)
    except IngestError as exc:
        # A failed batch's message names the operation; the user's own frames (from
        # the exception it is chained to) say where their code broke.
        print_user_traceback(exc)
        raise
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ingest.demo import run_demo

    return run_demo(port=args.port, duration=args.duration, rate=args.rate, batch_interval=args.batch_interval)


def _cmd_services(args: argparse.Namespace) -> int:
    if args.service == "kafka":
        if args.image_of is not None:
            raise ConfigError(f"`ingest services kafka` takes no further argument (got {args.image_of!r})")
        from ingest.testing.kafka import run_forever

        return run_forever(args.kafka_version)
    if args.service in ("hdfs", "s3"):
        if args.image_of is not None:
            raise ConfigError(f"`ingest services {args.service}` takes no further argument (got {args.image_of!r})")
        if args.service == "hdfs":
            from ingest.testing.hdfs import run_forever as run_hdfs

            return run_hdfs()
        from ingest.testing.s3 import run_forever as run_s3

        return run_s3()
    if args.service == "flume":
        if args.image_of is not None:
            raise ConfigError(f"`ingest services flume` takes no further argument (got {args.image_of!r})")
        if not args.config:
            raise ConfigError("`ingest services flume` needs --config FILE: the agent's Flume properties "
                              "(e.g. a1.sources = r1 ...)")
        from ingest.testing.flume import run_forever as run_flume

        return run_flume(args.config, args.agent, args.plugin_jar or ())
    if args.service == "image":
        from ingest.testing.images import IMAGE_SERVICES, run_build

        if args.image_of not in IMAGE_SERVICES:
            raise ConfigError(f"`ingest services image` needs the service whose image to build: "
                              f"one of {', '.join(IMAGE_SERVICES)} (got {args.image_of!r})")
        return run_build(args.image_of, args.kafka_version)
    raise ConfigError(f"unknown service {args.service!r}")


def _cmd_checkpoint(args: argparse.Namespace) -> int:
    from ingest.checkpoint_cli import run_checkpoint_command

    return run_checkpoint_command(args.action, args.directory, as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ingest", description="Reliable streaming ingestion in plain Python.")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO (default), WARNING or ERROR")
    parser.add_argument("--version", action="version", version=f"ingest {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an application file as __main__")
    run.add_argument("--ui-port", type=int, default=0,
                     help="port of the web UI and JSON API (default 0: any free port, printed at start)")
    run.add_argument("--ui-host", default=None, help="address the web UI listens on (default 127.0.0.1)")
    run.add_argument("--ui-token", default=None,
                     help="access token the web UI requires (default: $INGEST_UI_TOKEN; none when unset)")
    run.add_argument("--no-ui", action="store_true", help="serve no web UI")
    run.add_argument("--cluster", default=None, metavar="ADDRESS",
                     help="run partition tasks on the Dask cluster of this scheduler (tcp://host:8786), "
                          "whatever executor the application chose")
    run.add_argument("--workers", type=int, default=None, metavar="N",
                     help="run partition tasks on a local Dask cluster of N worker processes, started and "
                          "closed by this command, whatever executor the application chose")
    run.add_argument("--worker-memory", default=None, metavar="LIMIT",
                     help="with --workers: memory limit per worker process, such as 512MiB (default: "
                          "the machine's memory shared among the workers)")
    run.add_argument("app", help="path of the Python file that builds and starts a StreamingContext")
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the application")
    run.add_argument("--supervise", action="store_true",
                     help="run the job in a child process and restart it when it fails, with backoff")
    run.add_argument("--max-restarts", type=int, default=5, metavar="N",
                     help="with --supervise: give up after N restarts within the window (default 5)")
    run.add_argument("--restart-window", type=float, default=600.0, metavar="SECONDS",
                     help="with --supervise: the window failures are counted in (default 600)")
    run.add_argument("--restart-delay", type=float, default=1.0, metavar="SECONDS",
                     help="with --supervise: delay before the first restart, doubled per failure up to 60 s "
                          "(default 1)")
    run.set_defaults(fn=_cmd_run)

    demo = sub.add_parser("demo", help="run the seed example against a built-in line generator")
    demo.add_argument("--port", type=int, default=7777, help="local port of the line generator (0: any free port)")
    demo.add_argument("--duration", type=float, default=10.0, help="seconds to run before stopping (default 10)")
    demo.add_argument("--rate", type=float, default=20.0, help="lines per second from the generator (default 20)")
    demo.add_argument("--batch-interval", type=float, default=1.0, help="seconds per batch (default 1)")
    demo.set_defaults(fn=_cmd_demo)

    services = sub.add_parser("services", help="start a real service for development")
    services.add_argument("service", choices=["kafka", "flume", "hdfs", "s3", "image"],
                          help="kafka: start a broker; flume: start a Flume agent (--config); hdfs: a "
                               "MiniDFSCluster; s3: moto's S3 server; image: build a service's image (then name "
                               "it: kafka, hdfs, s3, flume)")
    services.add_argument("image_of", nargs="?", default=None, metavar="SERVICE",
                          help="with `image`: the service whose image to build on the Docker engine of "
                               "DOCKER_HOST, without a registry (kafka, hdfs, s3, flume)")
    services.add_argument("--config", default=None, metavar="FILE",
                          help="flume: the agent's configuration (Flume properties)")
    services.add_argument("--agent", default="a1", help="flume: the agent name the configuration uses (default a1)")
    services.add_argument("--plugin-jar", action="append", metavar="JAR",
                          help="flume: a jar to add to the agent's classpath, as plugins.d would (repeatable)")
    services.add_argument("--kafka-version", default=None, help="Apache Kafka version (default: the tested one)")
    services.set_defaults(fn=_cmd_services)

    ckpt = sub.add_parser("checkpoint", help="inspect a checkpoint directory")
    ckpt.add_argument("action", choices=["ls", "show", "fsck"],
                      help="ls: batches; show: everything; fsck: check every file")
    ckpt.add_argument("directory", help="the checkpoint directory")
    ckpt.add_argument("--json", action="store_true", help="print JSON instead of text")
    ckpt.set_defaults(fn=_cmd_checkpoint)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:  # also after --help's SystemExit: a reader gone shows up at this flush
            sys.stdout.flush()
    except BrokenPipeError:
        # Whoever read our output (head, less) is gone. Point stdout at /dev/null so
        # the interpreter's final flush does not raise again, and end quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `run --supervise` runs the same command again
    _setup_logging(args.log_level)
    try:
        return int(args.fn(args) or 0)
    except ConfigError as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        return 2
    except IngestError as exc:
        print(f"ingest: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

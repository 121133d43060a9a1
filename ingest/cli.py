"""The `ingest` command.

    ingest run APP.py [ARGS...]     run an application file as __main__
    ingest demo [--port 7777]       the seed example against a built-in line generator
    ingest services kafka           a local Kafka broker for development (Ctrl-C stops it)
    ingest services flume --config FILE [--agent a1] [--plugin-jar JAR]
                                    a local Flume 1.11 agent running FILE (Ctrl-C stops it)
    ingest services image kafka|flume
                                    build the ingest/kafka or ingest/flume image on the local Docker engine
    ingest checkpoint ls|show|fsck DIR
                                    inspect a checkpoint directory

Exit codes: 0 success, 1 the job failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import logging
import os
import runpy
import sys
from typing import Sequence

from ingest.errors import ConfigError, IngestError


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.app)
    if not os.path.isfile(path):
        raise ConfigError(f"application file {args.app!r} does not exist")
    sys.argv = [path, *args.args]
    sys.path.insert(0, os.path.dirname(path))
    runpy.run_path(path, run_name="__main__")
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
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an application file as __main__")
    run.add_argument("app", help="path of the Python file that builds and starts a StreamingContext")
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the application")
    run.set_defaults(fn=_cmd_run)

    demo = sub.add_parser("demo", help="run the seed example against a built-in line generator")
    demo.add_argument("--port", type=int, default=7777, help="local port of the line generator (0: any free port)")
    demo.add_argument("--duration", type=float, default=10.0, help="seconds to run before stopping (default 10)")
    demo.add_argument("--rate", type=float, default=20.0, help="lines per second from the generator (default 20)")
    demo.add_argument("--batch-interval", type=float, default=1.0, help="seconds per batch (default 1)")
    demo.set_defaults(fn=_cmd_demo)

    services = sub.add_parser("services", help="start a real service for development")
    services.add_argument("service", choices=["kafka", "flume", "image"],
                          help="kafka: start a broker; flume: start a Flume agent (--config); image: build a service's image (then name it: kafka)")
    services.add_argument("image_of", nargs="?", default=None, metavar="SERVICE",
                          help="with `image`: the service whose image to build on the Docker engine of "
                               "DOCKER_HOST, without a registry (kafka, flume)")
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
    parser = build_parser()
    args = parser.parse_args(argv)
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

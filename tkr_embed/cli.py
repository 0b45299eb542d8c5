"""`tkr-embed` command line: serve | demo-model | bench | keys | responses | db."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tkr_embed import __version__
from tkr_embed.config import ConfigError
from tkr_embed.serve_args import add_serve_arguments, settings_overrides


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        overrides = settings_overrides(args)
    except ConfigError as exc:
        print(f"tkr-embed: {exc}", file=sys.stderr)
        return 2
    from tkr_embed.api.server import serve

    return serve(config_path=args.config, overrides=overrides)


def _cmd_demo_model(args: argparse.Namespace) -> int:
    if args.random:
        from tkr_embed.models.gpt_oss.demo import write_demo_checkpoint

        path = write_demo_checkpoint(Path(args.dir), num_shards=args.shards, seed=args.seed)
        print(f"wrote a tiny gpt-oss checkpoint with random weights to {path}")
        return 0
    if args.shards != 1 or args.seed != 0:
        print("tkr-embed: --shards and --seed apply to --random checkpoints only", file=sys.stderr)
        return 2
    from tkr_embed.models.gpt_oss.demo_trained import write_trained_checkpoint

    path = write_trained_checkpoint(Path(args.dir))
    print(f"wrote the trained tkr-embed demo model (a tiny gpt-oss) to {path}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from tkr_embed.bench_cli import run_bench

    return run_bench(args)


def _cmd_keys(args: argparse.Namespace) -> int:
    from tkr_embed.security.cli import run_keys

    return run_keys(args)


def _cmd_db(args: argparse.Namespace) -> int:
    from tkr_embed.migrations.cli import run_db

    return run_db(args)


def _cmd_responses(args: argparse.Namespace) -> int:
    from tkr_embed.storage.cli import run_responses

    return run_responses(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tkr-embed", description="gpt-oss text-generation server")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the HTTP server",
        usage="tkr-embed serve [MODEL] [options]  (--help lists every option)",
        description="Run the HTTP server. Settings: defaults < YAML file < GENERATION_* environment < these flags.",
        allow_abbrev=False,  # with a flag per setting, a shortened flag would too easily name another one
    )
    serve.add_argument("--version", action="version", version=__version__)
    add_serve_arguments(serve)
    serve.set_defaults(func=_cmd_serve)

    demo = sub.add_parser(
        "demo-model", help="write the tiny trained demo model (or random weights) as a gpt-oss checkpoint"
    )
    demo.add_argument("dir")
    demo.add_argument("--random", action="store_true", help="random weights of the engine tests' tiny shape instead")
    demo.add_argument("--shards", type=int, default=1, help="number of safetensors shards (--random)")
    demo.add_argument("--seed", type=int, default=0, help="weights seed (--random)")
    demo.set_defaults(func=_cmd_demo_model)

    bench = sub.add_parser("bench", help="offline engine benchmark (prints JSON)")
    from tkr_embed.bench_args import add_bench_arguments

    add_bench_arguments(bench)
    bench.set_defaults(func=_cmd_bench)

    keys = sub.add_parser("keys", help="manage API keys in the server's database")
    from tkr_embed.security.cli_args import add_keys_arguments

    add_keys_arguments(keys)
    keys.set_defaults(func=_cmd_keys)

    responses = sub.add_parser("responses", help="manage stored /v1/responses answers in the server's database")
    from tkr_embed.storage.cli import add_responses_arguments

    add_responses_arguments(responses)
    responses.set_defaults(func=_cmd_responses)

    db = sub.add_parser("db", help="the schema of the server's database: upgrade it, or show its revision")
    from tkr_embed.migrations.cli import add_db_arguments

    add_db_arguments(db)
    db.set_defaults(func=_cmd_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""``simclr``: the one command-line program, with subcommands.

Each subcommand lives in the package that owns it and is imported only when it runs, so
``simclr serve`` never imports torch and ``simclr --help`` starts instantly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """A subcommand: ``module.<parser>(add_help)`` builds its parser, ``module.<main>(args, argv)`` runs it."""

    module: str
    summary: str
    parser: str = "get_args_parser"
    main: str = "cli_main"
    parser_module: str = ""  # where the parser lives, if not in ``module``


COMMANDS: dict[str, Command] = {
    "train": Command(
        "simclr_search.training.train", "train a SimCLR encoder on a folder or archive of images"
    ),
    "knn": Command(
        "simclr_search.training.knn_eval",
        "kNN top-1 of a checkpoint's representation on labelled images",
    ),
    "linear-probe": Command(
        "simclr_search.training.linear_probe",
        "linear classifier on a checkpoint's frozen representation",
    ),
    "export": Command(
        "simclr_search.training.export",
        "export a checkpoint to an ONNX model bundle (optionally INT8)",
    ),
    "train-decoder": Command(
        "simclr_search.training.decoder_train",
        "train a decoder (embedding -> image) on a frozen encoder",
    ),
    "train-denoiser": Command(
        "simclr_search.training.denoiser_train",
        "train a denoiser (noisy image -> clean image) on your images",
    ),
    "serve": Command(
        "simclr_search.serving.server.app",
        "serve embeddings and reverse image search over gRPC",
        parser_module="simclr_search.serving.server.settings",
    ),
    "calibrate-copies": Command(
        "simclr_search.serving.jobs.calibrate",
        "fit a bundle's copy decision (is_copy) on edited copies of your photos",
    ),
    "index": Command(
        "simclr_search.serving.jobs.index_command",
        "index a folder of images (locally or via a server)",
        "index_parser",
        "index_main",
    ),
    "dedup": Command(
        "simclr_search.serving.jobs.dedup_command",
        "find the duplicates of a library and which copy to keep",
        "dedup_parser",
        "dedup_main",
    ),
    "search": Command(
        "simclr_search.serving.client.commands",
        "reverse image search for an image file",
        "search_parser",
        "search_main",
    ),
    "embed": Command(
        "simclr_search.serving.client.commands",
        "embeddings of image files, as JSON lines",
        "embed_parser",
        "embed_main",
    ),
    "denoise": Command(
        "simclr_search.serving.client.commands",
        "denoise an image through the server",
        "denoise_parser",
        "denoise_main",
    ),
    "quickstart": Command(
        "simclr_search.serving.jobs.quickstart", "the end-to-end demo: model, index, server, search"
    ),
    "bench": Command(
        "simclr_search.cli.bench", "run a benchmark from benchmarks/ by name (none: list them)"
    ),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simclr",
        description="Self-supervised image embeddings: train, export, index, serve and search.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {name:<14} {c.summary}" for name, c in COMMANDS.items())
        + "\n\n'simclr COMMAND --help' shows a command's options.",
    )
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in {"-h", "--help"}:
        top.print_help()
        return 0 if argv else 2
    verbose = "-v" in argv or "--verbose" in argv
    argv = [a for a in argv if a not in {"-v", "--verbose"}]
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        top.error(f"unknown command {name!r}; choose one of {', '.join(sorted(COMMANDS))}")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    command = COMMANDS[name]
    module = importlib.import_module(command.module)
    parser_module = importlib.import_module(command.parser_module or command.module)
    parser = getattr(parser_module, command.parser)(add_help=True)
    parser.prog = f"simclr {name}"
    args = parser.parse_args(rest)
    try:
        return int(getattr(module, command.main)(args, rest) or 0)
    except (ValueError, FileNotFoundError, FloatingPointError) as exc:
        # Errors a user can act on: one clear line, no traceback.
        print(f"simclr {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"simclr {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

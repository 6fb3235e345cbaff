"""The `heartline` command line: parse, call the API or the library, render. It decides nothing."""

from heartline.cli._main import build_parser, main

__all__ = ["build_parser", "main"]

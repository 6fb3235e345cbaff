"""The `heartline` command line: parse, call the API or the library, render. It decides nothing."""

from heartline.cli._main import cli, main

__all__ = ["cli", "main"]

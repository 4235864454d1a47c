"""The `birdtrap` command: parse arguments, call the library, print. No logic of its own."""

from birdtrap.cli.main import cli, main

__all__ = ["cli", "main"]

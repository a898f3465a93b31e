"""``nexus-store config``: the documented settings examples that ship inside the package."""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated

import typer

__all__ = ["config_app", "example_text"]

config_app = typer.Typer(help="The documented settings examples.", no_args_is_help=True)

_EXAMPLES = {"toml": "nexus.toml", "env": "env.example"}


def example_text(kind: str = "toml") -> str:
    """The shipped example: ``toml`` (every setting at its default) or ``env`` (the common ones)."""
    return files("nexus_store").joinpath("examples", _EXAMPLES[kind]).read_text("utf-8")


@config_app.command("example")
def example(
    env: Annotated[
        bool, typer.Option("--env", help="Print the environment-variable example instead.")
    ] = False,
) -> None:
    """Print the example settings file: `nexus-store config example > nexus.toml`."""
    typer.echo(example_text("env" if env else "toml"), nl=False)

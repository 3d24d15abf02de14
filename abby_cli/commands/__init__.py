"""The commands, one module per area; :func:`register` adds them all to the app."""

from __future__ import annotations

import typer

from abby_cli.commands import doctor, generate, images, run, storage

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    run.register(app)
    generate.register(app)
    images.register(app)
    storage.register(app)
    doctor.register(app)

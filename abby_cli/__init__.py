"""The ``abby`` command line: run the bot, make images, look after storage, check the setup.

``abby_cli.main.app`` is the typer application (the ``abby`` console script). Commands
live in :mod:`abby_cli.commands`, one module per area; rendering and the single
exception-to-error-code mapping live in :mod:`abby_cli.output` and :mod:`abby_cli.errors`.
"""

__all__ = ["__version__"]

__version__ = "0.2.0"

"""``python -m abby_cli`` runs the same app as the ``abby`` console script."""

from abby_cli.main import app

app(prog_name="abby")

"""`python -m local` is the `stepwise` command."""

from local.cli import app

app()

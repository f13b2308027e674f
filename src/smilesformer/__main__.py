"""`python -m smilesformer ...` (also what `torchrun -m smilesformer ...` runs on every rank)."""

from .cli import app

app()

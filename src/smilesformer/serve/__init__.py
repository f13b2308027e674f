"""The web service: a FastAPI app (``create_app``) with a micro-batcher and a static page.

Needs the ``serve`` extra: ``pip install smilesformer[serve]``.
"""

from .app import ServeConfig, create_app, run_server
from .batching import MicroBatcher

__all__ = ["MicroBatcher", "ServeConfig", "create_app", "run_server"]

"""Settings of `birdtrap serve`: the `serve:` section of the configuration (birdtrap.config)."""

from birdtrap.config import ServeSettings

__all__ = ["ServeSettings"]

"""birdtrap: a camera-trap bird classifier for small unattended devices."""

from birdtrap.errors import BirdtrapError, ConfigError, ExportError, FetchError, ModelError, PhotoError, StoreError

__version__ = "0.1.0"

__all__ = [
    "BirdtrapError",
    "ConfigError",
    "ExportError",
    "FetchError",
    "ModelError",
    "PhotoError",
    "StoreError",
    "__version__",
]

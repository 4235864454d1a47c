"""The errors training raises for a user's mistake, each naming the flag or path and the fix.

They subclass `birdtrap.errors.BirdtrapError`, so the CLI turns every one of them into a one-line
message instead of a traceback, exactly as the daemon's CLI does.
"""

from birdtrap.errors import BirdtrapError


class TrainingError(BirdtrapError):
    """Base of the errors below."""


class DatasetError(TrainingError):
    """The dataset folder is missing, empty or has too few usable photos."""


class WeightsError(TrainingError):
    """Backbone weights could not be downloaded or read (`--weights`)."""


class ExportError(TrainingError):
    """A TFLite conversion failed, or the result does not run in the daemon's runtime."""


class ConvertError(TrainingError):
    """An upstream model could not be verified or converted (`python -m training.convert`)."""

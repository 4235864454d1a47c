"""The errors a user can act on.

Every message says what happened, names the thing (path, key or flag) and gives the fix, so the
CLI can print it as it is and the journal needs no traceback.
"""


class BirdtrapError(Exception):
    """Base of every error birdtrap raises for a user's mistake or a broken input."""


class ConfigError(BirdtrapError):
    """The configuration file is missing, unreadable or invalid."""


class PhotoError(BirdtrapError):
    """A photo cannot be read or decoded; the photo is recorded as failed, the daemon goes on."""


class ModelError(BirdtrapError):
    """A model file, its labels or its model card is missing, broken or inconsistent."""


class StoreError(BirdtrapError):
    """The database cannot be opened, migrated or written."""


class ExportError(BirdtrapError):
    """An export (Camtrap DP, training set) cannot be written."""


class FetchError(BirdtrapError):
    """A model download failed or did not match its pinned checksum."""


class DatabaseFileError(StoreError):
    """The database file is damaged, read-only or cannot be opened.

    The problem and the fix are kept apart so `birdtrap doctor` can show them in its two columns;
    the message is both, so the CLI and the journal print it as it is.
    """

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}. {fix[:1].upper()}{fix[1:]}")
        self.problem = problem
        self.fix = fix


class DaemonRunningError(StoreError):
    """Another `birdtrap run` holds this SQLite database's lock."""


def first_line(error: BaseException) -> str:
    """An error's first line, without SQLAlchemy's wrapping (its `orig` is the driver's own
    message), for log lines and messages that must stay one line."""
    text = str(getattr(error, "orig", None) or error).strip()
    return (text.splitlines() or [type(error).__name__])[0]

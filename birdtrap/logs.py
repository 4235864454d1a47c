"""Log set-up for the daemon and CLI: plain lines on a terminal, priority-prefixed under journald."""

from __future__ import annotations

import logging
import os
import sys

SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """No timestamp (journald adds one) and a `<N>` syslog priority so `journalctl -p` filters work."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{SYSLOG_PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once; called only by the CLI and the daemon entry point."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("tensorflow", "absl", "watchdog", "PIL", "alembic"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

"""`birdtrap run`: watching, batching, the one commit path, events, notifications, systemd.

`wiring` is the composition root (configuration -> models); `ingest` turns one batch of files
into committed rows; `loop` is the long-running daemon around them.
"""

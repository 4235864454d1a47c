"""The edge install's size on disk: what `pip install birdtrap` (no extras) puts on a Pi.

Read from the installed distributions' own file lists (importlib.metadata), following
`Requires-Dist` from birdtrap without extras, so it needs no network and no second venv. Markers
are evaluated for this machine: a Pi's aarch64 wheels are of the same order, not the same bytes.
"""

from __future__ import annotations

import re
from importlib import metadata

from bench.report import Results

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _applies(requirement: str) -> bool:
    """A requirement without an extra whose environment marker (if any) holds here."""
    if ";" not in requirement:
        return True
    marker = requirement.split(";", 1)[1]
    if "extra" in marker:
        return False
    try:
        from packaging.markers import Marker

        return Marker(marker).evaluate()
    except Exception:  # noqa: BLE001 - no packaging, or a marker it cannot read: count it in
        return True


def edge_closure(root: str = "birdtrap") -> dict[str, int]:
    """Every distribution the edge install pulls in, with its installed bytes."""
    sizes: dict[str, int] = {}
    todo = [root]
    while todo:
        name = _normalise(todo.pop())
        if name in sizes:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        files = dist.files or []
        sizes[name] = sum(f.size or 0 for f in files if f.size is not None) if name != _normalise(root) else 0
        for requirement in dist.requires or []:
            match = _NAME.match(requirement)
            if match and _applies(requirement):
                todo.append(match.group(1))
    return sizes


def install_size(results: Results) -> None:
    """`install.edge_mb`, with the biggest packages named, and whether TensorFlow is among them."""
    sizes = edge_closure()
    total_mb = sum(sizes.values()) / 1e6
    biggest = sorted(sizes.items(), key=lambda item: item[1], reverse=True)[:4]
    heavy = [name for name in sizes if name in ("tensorflow", "tensorflow-cpu", "tf-keras", "torch")]
    note = ", ".join(f"{name} {size / 1e6:.0f}" for name, size in biggest)
    results.add(
        "install.edge_mb",
        f"edge install on disk ({len(sizes)} distributions)",
        total_mb,
        "MB",
        note=f"{'no TensorFlow' if not heavy else 'INCLUDES ' + ', '.join(heavy)}; biggest: {note}; site-packages, this platform",
    )

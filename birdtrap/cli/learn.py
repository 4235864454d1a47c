"""`birdtrap learn`: teach this camera's head from a labelled folder, or show where it stands (issue 23).

Kept apart from cli.py like the other cli_*.py modules; cli.py registers it with `cli.add_command`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from birdtrap.cli.common import config_option, load_config
from birdtrap.errors import BirdtrapError


@click.command()
@click.argument("labels", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--root", type=click.Path(file_okay=False, path_type=Path), help="Folder the CSV's paths are relative to [the CSV's folder's parent]."
)
@click.option("--camera", help="Camera id the examples belong to [camera.id of the config].")
@click.option(
    "--status",
    "show_status",
    is_flag=True,
    help="Print the examples per class, the cross-validated figures and whether the head is in use.",
)
@config_option
def learn(labels: Path | None, root: Path | None, camera: str | None, show_status: bool, config_path: Path | None) -> None:
    """Learn this camera from labelled frames: add them as examples, cross-validate, install the head if better.

    LABELS is a CSV like `evaluate`'s (path,truth; truth a scientific name or none; an optional
    kind column names no-bird frames: mammal, human, empty). Without LABELS the stored examples
    (reviews included) are learnt again.

    \b
        birdtrap learn ../shared/data/labels.csv --camera burrow-2
        birdtrap learn --status
    """
    from birdtrap import evaluate, store
    from birdtrap.daemon import learn as learning
    from birdtrap.daemon.wiring import build_identifier, load_embedder
    from birdtrap.identify.camera_head import is_bird_label
    from birdtrap.store import examples as examples_store

    config = load_config(config_path)
    camera_id = camera or config.camera.id
    try:
        sessions = store.open_store(config.database.url, config.database.busy_timeout_seconds)
        if show_status and labels is None:
            _print_status(sessions, camera_id)
            return
        identifier = build_identifier(config, camera_head=False)
        identifier.embedder = load_embedder(config)
        if labels is not None:
            if not labels.is_file():
                raise click.BadParameter(f"{labels} does not exist; give the labels CSV (path,truth).", param_hint="LABELS")
            photos = evaluate.read_labels(labels, root)
            species = {" ".join(label.scientific.split()[:2]) for label in identifier.species.labels}
            with sessions.begin() as session:
                added = learning.add_labelled(session, photos, camera_id, species)
                counts = examples_store.example_counts(session, camera_id)
                if len(counts) < 2 or not any(is_bird_label(label) for label in counts):
                    # Raised inside the transaction, so nothing is kept: a CSV that cannot make a head changes nothing.
                    raise learning.LearnError(
                        f"{labels} and the stored examples hold {', '.join(counts) or 'nothing'}; a head needs a bird class and "
                        "at least one other (e.g. this camera's blank frames). Add rows of another kind and run learn again."
                    )
            click.echo(f"added {added} examples for camera {camera_id}", err=True)
        learning.relearn(sessions, identifier, camera_id)
    except BirdtrapError as e:
        raise click.ClickException(str(e)) from e
    _print_status(sessions, camera_id)


def _print_status(sessions, camera_id: str) -> None:
    from birdtrap.store import examples as examples_store

    with sessions() as session:
        counts = examples_store.example_counts(session, camera_id)
        state = examples_store.latest_head(session, camera_id)
    if not counts:
        click.echo(f"camera {camera_id}: no examples yet; review events or run `birdtrap learn LABELS.csv`.")
        return
    if state is None:
        _print_figures(counts, None, False)
        return
    _print_figures(counts, state.figures, state.figures.get("a_head_in_use", state.in_use), state.in_use)


def _print_figures(counts: dict[str, int], figures: dict | None, in_use: bool, newest_in_use: bool | None = None) -> None:
    click.echo("examples per class:")
    for label, count in counts.items():
        click.echo(f"  {label:40} {count}")
    if figures is None:
        click.echo("no head learnt yet; run `birdtrap learn`.")
        return
    click.echo(f"cross-validated over {figures['frames']} frames ({figures['folds']} folds):")
    click.echo(
        f"  general models: named right {figures['general_right']}/{figures['bird_frames']}, false birds {figures['general_false_birds']}"
    )
    click.echo(f"  with the head:  named right {figures['head_right']}/{figures['bird_frames']}, false birds {figures['head_false_birds']}")
    if newest_in_use is False and in_use:
        click.echo("head: the newest was refused (not better); an earlier head is in use")
    else:
        click.echo("head: in use" if in_use else "head: not in use (it would not name more right without more false birds)")
    sys.stdout.flush()

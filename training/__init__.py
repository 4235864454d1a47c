"""birdtrap's workstation package: labelled photos in, a model bundle for the daemon out.

`python -m training train | evaluate | export` (see `training/README.md`). Installed with the
`train` extra. It imports `birdtrap.identify.preprocess` so that training and the field prepare photos with
the same code; `birdtrap` never imports this package or TensorFlow.

Importing `training` itself stays light (no TensorFlow), so `--help` and the data checks are quick.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"

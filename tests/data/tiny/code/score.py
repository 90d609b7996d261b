"""Tiny scoring script: one line per file, with six's version (proves the locked environment imports)."""
import six


def init():
    pass


def run(mini_batch):
    return [f"{path} six-{six.__version__}" for path in mini_batch]

"""What the two checks share: the failures found so far, and where the repository is."""

import pathlib

failures = []
root = pathlib.Path(".")


def fail(message):
    failures.append(message)

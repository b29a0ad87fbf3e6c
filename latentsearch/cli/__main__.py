"""``python -m latentsearch.cli``: the same as the ``latentsearch`` command."""

from latentsearch.cli import main

main()

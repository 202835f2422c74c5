"""``python -m seqlab.cli`` = the ``seqlab`` command."""

from seqlab.cli import main

main()

"""``python -m pipelines ARGS``: the ``stemdb`` command line (what ``torchrun`` runs on every rank of
``stemdb train --nproc N``; the process group is joined from the environment torchrun sets)."""

from pipelines.cli import main

if __name__ == "__main__":
    main()

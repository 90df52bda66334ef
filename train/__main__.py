"""``python -m train --config data.yaml --model unet --out RUN [...]``: the ``stemdb train`` command on its own.

This is the module ``torchrun`` launches on every rank (``torchrun --nproc_per_node N -m train ...``); the process
group is joined from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``).
"""

from train.cli import main

if __name__ == "__main__":
    main()

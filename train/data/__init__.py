"""Streaming datasets for training: on-the-fly remixes, rendered MUSDB18-HQ-layout folders, and full tracks.

- :class:`RemixStream`: the remix engine's mixtures rendered on the fly (``IterableDataset``), sharded over ranks
  and DataLoader workers, ordered by ``(seed, epoch)``, resumable mid-epoch.
- :class:`MixtureFolders`: random crops from MUSDB18-HQ-layout folders (ours or the real MUSDB18-HQ), same
  sharding and resume.
- :class:`MusdbTracks`: full tracks of a MUSDB18(-HQ) folder as the ``musdb`` package reads them, for validation.
- :class:`StreamLoader`: batches of a stream rendered in place in reused shared-memory buffers (the fast path),
  optionally moved to the device with GPU pitch/stretch (:func:`device_batch`).

Typical loop::

    ds = RemixStream("work/catalog", "data.yaml", seconds=6.0, seed=0, epoch_length=20_000, dtype="int16")
    loader = StreamLoader(ds, batch_size=16, num_workers=8, device="cuda")
    for epoch in range(start_epoch, n_epochs):
        ds.set_epoch(epoch)
        for mixture, targets in loader:           # (B, C, T), (B, S, C, T) float32 on the GPU
            ...
            checkpoint["data"] = ds.state_dict()   # exact resume point: ds.load_state_dict(...) later
"""

from train.data.base import IndexedStream, to_float
from train.data.folders import MixtureFolders, MusdbTracks
from train.data.loader import StreamLoader, device_batch
from train.data.remix_stream import RemixStream, max_stretch_rate, remix_config
from train.data.sharding import epoch_order, epoch_seed, rank_share, worker_positions

__all__ = [
    "IndexedStream",
    "MixtureFolders",
    "MusdbTracks",
    "RemixStream",
    "StreamLoader",
    "device_batch",
    "epoch_order",
    "epoch_seed",
    "max_stretch_rate",
    "rank_share",
    "remix_config",
    "to_float",
    "worker_positions",
]

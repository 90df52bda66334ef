"""From ``data.yaml`` to a trained run: the training data the config names, the model, the validation crops and
the :class:`train.trainer.Trainer` (what ``stemdb train``, ``python -m pipelines train`` under torchrun and the
``train-model`` flow call)::

    from train.run import train_run
    result = train_run("data.yaml", out="runs/unet1", model="unet", overrides={"steps": 1000})
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from augment.config import ProjectConfig, load_project
from stemdb.config import StemdbConfig
from stemdb.errors import ConfigError
from train.checkpoint import init_weights
from train.config import TrainConfig, train_config
from train.feed import data_stems
from train.models import build_model, model_class
from train.runlog import TrainResult
from train.runtime import dist_info, init_distributed, resolve_device
from train.trainer import Trainer
from train.validation import Crops, load_crops


def build_train_data(scfg: ProjectConfig, tcfg: TrainConfig, *, seconds: float) -> tuple[Any, str | None, dict]:
    """The training stream ``tcfg.data`` names: ``(stream, catalogue fingerprint or None, description)``.

    ``stream``: :class:`train.data.RemixStream` over ``scfg.catalog`` with ``scfg.remix``; ``folders``:
    :class:`train.data.MixtureFolders` random crops of ``tcfg.folders`` (split ``tcfg.folders_split``). Both read
    rank and world size from ``torch.distributed`` (each rank its own share), yield ``int16`` when training on CUDA
    from 16-bit material (half the bytes to move) and are batched by :class:`train.data.StreamLoader` in the
    Trainer.
    """
    from stemdb.catalog import Catalog
    from train.data import MixtureFolders, RemixStream

    cuda = resolve_device(tcfg.device).type == "cuda"
    if tcfg.data == "folders":
        if tcfg.folders is None:
            raise ConfigError("train.folders: needed when train.data is 'folders'", key="train.folders")
        ds = MixtureFolders(tcfg.folders, split=tcfg.folders_split, targets=scfg.remix.targets, seconds=seconds,
                            seed=tcfg.seed, epoch_length=tcfg.epoch_length, batch_size=tcfg.batch_size,
                            mono=tcfg.mono)
        return ds, None, {"data": "folders", "folders": str(tcfg.folders), "split": tcfg.folders_split}
    dtype = "int16" if cuda and scfg.remix.subtype == "PCM_16" else "float32"
    ds = RemixStream(scfg.catalog, scfg, seconds=seconds, seed=tcfg.seed, epoch_length=tcfg.epoch_length,
                     batch_size=tcfg.batch_size, sample_rate=tcfg.sample_rate, mono=tcfg.mono,
                     gpu_augment=tcfg.gpu_augment, dtype=dtype)
    fingerprint = Catalog.open(scfg.catalog).fingerprint()
    return ds, fingerprint, {"data": "stream", "catalog": str(scfg.catalog)}


def run_targets(tcfg: TrainConfig, stems: tuple[str, ...]) -> tuple[str, ...]:
    """The stems the run's model separates: ``train.targets`` (a per-target run), else every stem of the data.

    Raises:
        ConfigError: a ``train.targets`` name that is not one of the data's ``stems`` (both named).
    """
    missing = [t for t in tcfg.targets if t not in stems]
    if missing:
        raise ConfigError(f"train.targets: {missing} not among the training data's stems {list(stems)}",
                          key="train.targets")
    return tcfg.targets or stems


def train_run(
    config: str | Path | StemdbConfig | None = None,
    *,
    out: str | Path,
    model: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = True,
    train_data: Any = None,
    valid: Crops | None = None,
    max_steps: int | None = None,
    init: str | Path | None = None,
) -> TrainResult:
    """Train a bundled model as ``data.yaml`` describes (its ``remix`` targets, channels and rate; its ``train:``
    section, with ``overrides`` and ``model`` on top) into the run folder ``out``.

    Joins the ``torchrun`` process group when the environment describes one. ``train_data`` / ``valid`` replace
    the configured data (tests, benchmarks); otherwise the data comes from :func:`build_train_data` and the
    validation crops from ``train.valid.root``. ``init``: start from the weights of another run (its newest
    checkpoint) or checkpoint file, with a fresh optimizer and step count; the run records where its weights came
    from as ``extra.init`` in ``run.json`` and in its checkpoints (a resumed run continues from its own checkpoint).

    Raises:
        train.checkpoint.CheckpointError: ``init`` holds no checkpoint, or one of another architecture.
    """
    scfg = load_project(config)
    base = Path(config).resolve().parent if isinstance(config, str | Path) else Path.cwd()
    tcfg = train_config(scfg.train, overrides={**(overrides or {}), "model": model}, base=base)
    if not getattr(model_class(tcfg.model), "trainable", True):
        raise ConfigError(f"train.model={tcfg.model!r} has no trainable weights: use it without training "
                          f"(stemdb separate --model {tcfg.model} FILE)", key="train.model")
    init_distributed()
    rank, _ = dist_info()
    seconds = tcfg.seconds or scfg.remix.seconds
    fingerprint, extra = None, {"data": "given"}
    if train_data is None:
        train_data, fingerprint, extra = build_train_data(scfg, tcfg, seconds=seconds)
    targets = run_targets(tcfg, data_stems(train_data) or tuple(scfg.remix.targets))
    channels = int(getattr(train_data, "channels", 1 if tcfg.mono else scfg.remix.channels))
    rate = int(getattr(train_data, "sample_rate", tcfg.sample_rate or scfg.remix.sample_rate))
    net = build_model(tcfg.model, targets=targets, channels=channels, sample_rate=rate, seed=tcfg.seed,
                      **tcfg.model_options)
    if init is not None:
        extra = {**extra, "init": init_weights(net, init)}
    if valid is None and tcfg.valid.root is not None and rank == 0:
        v = tcfg.valid
        valid = load_crops(v.root, stems=targets, channels=channels, sample_rate=rate, seconds=v.seconds,
                           max_tracks=v.max_tracks, crops_per_track=v.crops_per_track, tracks=v.tracks)
    trainer = Trainer(net, tcfg, out=out, train_data=train_data, valid=valid,
                      stemdb_config=scfg.model_dump(mode="json"), catalog_fingerprint=fingerprint, extra=extra)
    return trainer.fit(resume=resume, max_steps=max_steps)


def iter_batches(mixtures: Tensor, targets: Tensor, *, batch_size: int) -> Iterable[tuple[Tensor, Tensor]]:
    """A re-iterable of ready batches over fixed tensors, in order (no shuffling): a tiny data source for
    benchmarks and smoke runs."""

    class _Batches:
        def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
            for i in range(0, mixtures.shape[0] - batch_size + 1, batch_size):
                yield mixtures[i:i + batch_size], targets[i:i + batch_size]

    return _Batches()


__all__ = ["build_train_data", "iter_batches", "run_targets", "train_run"]

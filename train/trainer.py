"""The :class:`Trainer`: optimizer steps with mixed precision and gradient accumulation, LR milestones, validation,
checkpoints, exact resume and DDP, for one :class:`train.models.SeparationModel` and one run folder.

::

    from train.config import train_config
    from train.trainer import Trainer
    cfg = train_config({"steps": 1000, "batch_size": 4, "lr_halve_every": 300})
    trainer = Trainer(model, cfg, out="runs/unet1", train_data=stream, valid=crops)
    result = trainer.fit()          # resumes from runs/unet1/checkpoints/ when there is one

Training practice (options of :class:`train.config.TrainConfig`, the ``train:`` section of ``data.yaml``):

- **precision**, **devices**, **DDP** setup: :mod:`train.runtime`; the models keep their STFTs, LSTMs and
  normalisation statistics in float32 themselves. Under DDP the loss module (:mod:`train.step`) is wrapped in
  ``DistributedDataParallel``; each rank reads its own share of the data (:mod:`train.feed`).
- **gradient accumulation**: ``accumulate`` micro-batches of ``batch_size`` items per optimizer step and process;
  the global batch is ``batch_size * accumulate * world_size``. Under DDP only the last micro-batch synchronises.
- **LR milestones**: ``MultiStepLR`` multiplying by ``lr_gamma`` (0.5: halving) at ``lr_milestones`` and/or every
  ``lr_halve_every`` optimizer steps.
- **speed switches**: ``torch.backends.cudnn.benchmark`` on CUDA and ``torch.set_flush_denormal(True)`` on CPU (both
  process-wide switches, set when a Trainer is built on that device; denormals make CPU convolutions 10-100x slower).
- **randomness**: the weights come from ``build_model(seed=...)``; dropout draws from torch's generator re-seeded
  at every step from (seed, step, rank) inside ``torch.random.fork_rng`` (the caller's random state is untouched and
  a resumed run draws exactly what an uninterrupted one draws); data order: :mod:`train.feed`.
- **checkpoints** every ``checkpoint_every`` steps and at the end (rank 0 only; :mod:`train.checkpoint`) with all a
  resume needs (step, epoch and position in it, optimizer, scheduler, scaler, stream state); :meth:`Trainer.fit`
  resumes from the newest one in ``out`` and continues the step count and the LR schedule exactly.
- **logging**: :mod:`train.runlog` (``train.csv``, ``train.png``), rewritten at every checkpoint; validation:
  :mod:`train.validation`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from stemdb.errors import ConfigError
from train.checkpoint import (
    checkpoint_path,
    code_version,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from train.config import TrainConfig
from train.feed import BatchFeed, TrainingError
from train.models import SeparationModel
from train.runlog import CSV_NAME, PNG_NAME, RUN_JSON, CsvLog, TrainResult, csv_columns, pace, plot_history
from train.runtime import derive_seed, dist_info, resolve_device, resolve_precision
from train.step import LossStep, unused_parameters
from train.validation import Crops, validate

logger = logging.getLogger(__name__)


@dataclass
class FitState:
    """The counters of one :meth:`Trainer.fit` call.

    ``stop``: the step this call trains to; ``final_step``: the step validated as the last one (``stop``, or where
    the time budget ran out); ``loss_sum`` / ``n_sum``: losses since the last logged row (a 0-d tensor on the
    device, summed without a host sync); ``train_s`` / ``audio_s``: seconds of training and of mixture audio
    trained on (all ranks) in this call.
    """

    stop: int
    start_step: int
    valid_every: int
    budget_s: float | None
    loss_sum: Tensor
    lr: float
    final_step: int = -1
    n_sum: int = 0
    last_loss: float = math.nan
    last_valid: dict[str, float] = field(default_factory=dict)
    valid_step: int = -1
    last_ckpt: Path | None = None
    train_s: float = 0.0
    audio_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Trains one :class:`SeparationModel` into a run folder ``out``.

    Args:
        model: the model (built with ``build_model(..., seed=...)``); moved to the device here.
        config: :class:`train.config.TrainConfig`.
        out: the run folder (``checkpoints/``, ``train.csv``, ``train.png``, ``run.json``).
        train_data: a :mod:`train.data` stream, another ``IterableDataset``, a map-style ``Dataset``, or a
            re-iterable of ready batches (see :mod:`train.feed`).
        valid: validation crops (:func:`train.validation.load_crops`), scored on rank 0 every ``valid.every`` steps
            and at the end.
        stemdb_config: the resolved ``data.yaml`` as JSON data, recorded in checkpoints and ``run.json``.
        catalog_fingerprint: the training catalogue's fingerprint, recorded likewise (a resume warns on a change).
        extra: more plain metadata for the checkpoints (e.g. the data source).
    """

    def __init__(
        self,
        model: SeparationModel,
        config: TrainConfig,
        *,
        out: str | Path,
        train_data: Any,
        valid: Crops | None = None,
        stemdb_config: Mapping[str, Any] | None = None,
        catalog_fingerprint: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if config.model != model.name:
            config = config.model_copy(update={"model": model.name})
        self.cfg, self.out, self.valid = config, Path(out), valid
        self.rank, self.world = dist_info()
        self.ddp = self.world > 1
        self.device = resolve_device(config.device)
        self.amp = resolve_precision(config.precision, self.device)
        self._process_switches()
        self.model = model.to(self.device)
        self.loss_step = LossStep(self.model, config.loss_name, conditioning=config.conditioning)
        self.wrapped: nn.Module = self._wrap_ddp() if self.ddp else self.loss_step
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.lr, eps=self.amp.adam_eps, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=config.milestones(), gamma=config.lr_gamma
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp.scaler)
        self.feed = BatchFeed(train_data, targets=self.model.targets, batch_size=config.batch_size,
                              num_workers=config.num_workers, seed=config.seed, rank=self.rank, world=self.world,
                              device=self.device)
        self.meta = {
            "stemdb_config": dict(stemdb_config) if stemdb_config is not None else None,
            "catalog_fingerprint": catalog_fingerprint,
            "extra": dict(extra or {}),
        }
        self.step = 0
        self.elapsed_s = 0.0
        self.resumed_from: int | None = None
        self.csv = CsvLog(self.out / CSV_NAME, csv_columns(self.model.targets))

    # -- setup ---------------------------------------------------------------------------------------------------
    def _process_switches(self) -> None:
        if self.device.type == "cuda" and self.cfg.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        if self.device.type == "cpu" and self.cfg.flush_denormal:
            torch.set_flush_denormal(True)

    def _wrap_ddp(self) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        unused = unused_parameters(self.loss_step, device=self.device)
        if unused:  # e.g. Conv-TasNet's last residual convolution, whose output nothing reads
            logger.info("DDP: %d parameter tensors get no gradient (%s); find_unused_parameters on",
                        len(unused), ", ".join(unused[:4]))
        return DistributedDataParallel(self.loss_step, device_ids=ids, find_unused_parameters=bool(unused))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def train_data(self) -> Any:
        return self.feed.data

    @property
    def epoch(self) -> int:
        """Epochs completed by the data feed."""
        return self.feed.epoch

    def _rng_devices(self) -> list[int]:
        return [self.device.index or 0] if self.device.type == "cuda" else []

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The checkpoint payload (tensors and plain data only)."""
        return {
            "model_config": self.model.config(),
            "model_state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "train_config": self.cfg.model_dump(mode="json"),
            **self.meta,
            "code_version": code_version(),
            "seed": self.cfg.seed,
            "step": self.step,
            "epoch": self.feed.epoch,
            "batches_in_epoch": self.feed.batches_in_epoch,
            "world_size": self.world,
            "elapsed_s": self.elapsed_s,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.amp.scaler else None,
            "stream": self.feed.stream_state(),
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def save(self) -> Path | None:
        """Write a checkpoint for the current step (rank 0; others return ``None``), prune old ones, redraw the
        PNG."""
        if not self.is_main:
            return None
        path = save_checkpoint(checkpoint_path(self.out, self.step), self.state())
        prune_checkpoints(self.out, self.cfg.keep_checkpoints)
        self._plot()
        logger.info("checkpoint %s", path)
        return path

    def load(self, path: str | Path) -> None:
        """Restore model, optimizer, scheduler, scaler, counters and stream position from a checkpoint.

        Raises:
            TrainingError: the checkpoint holds another architecture.
        """
        ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt["model_config"] != self.model.config():
            raise TrainingError(
                f"{ckpt['path']}: checkpoint of model {ckpt['model_config']} cannot resume model "
                f"{self.model.config()} (start a new run folder, or use the same model options)"
            )
        fp = self.meta["catalog_fingerprint"]
        if ckpt.get("catalog_fingerprint") not in (None, fp):
            logger.warning("resuming %s: catalogue fingerprint changed (%s -> %s); the data is not the same",
                           ckpt["path"], ckpt.get("catalog_fingerprint"), fp)
        self.model.load_state_dict(ckpt["model_state"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scheduler.milestones = Counter(self.cfg.milestones())  # the current config's schedule wins
        if self.amp.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.feed.restore(epoch=int(ckpt["epoch"]), batches_in_epoch=int(ckpt["batches_in_epoch"]),
                          stream=ckpt.get("stream"))
        self.elapsed_s = float(ckpt.get("elapsed_s", 0.0))
        if ckpt.get("world_size", 1) != self.world:
            logger.warning("resuming a %s-process run with %d processes: the data order changes",
                           ckpt.get("world_size"), self.world)
        self.resumed_from = self.step

    # -- one optimizer step ----------------------------------------------------------------------------------------
    def train_step(self, batches: Iterator[tuple[Tensor, Tensor]]) -> tuple[Tensor, float]:
        """One optimizer step over ``accumulate`` micro-batches; returns (mean loss as a 0-d tensor on the device,
        seconds of mixture audio this process trained on)."""
        self.model.train()
        acc = self.cfg.accumulate
        total = torch.zeros((), device=self.device)
        audio_s = 0.0
        for micro in range(acc):
            mix, tgt = next(batches)
            # after the data (a DataLoader may draw from the global generator when it starts an epoch)
            torch.manual_seed(derive_seed(self.cfg.seed, self.step, micro, self.rank, "step"))
            if self.cfg.in_batch_remix > 1:
                mix, tgt = self._remix(mix, tgt, micro)
            audio_s += mix.shape[0] * mix.shape[-1] / self.model.sample_rate
            last = micro == acc - 1
            sync = contextlib.nullcontext() if (not self.ddp or last) else self.wrapped.no_sync()
            with sync:
                with self.amp.autocast(self.device):
                    loss = self.wrapped(mix, tgt, derive_seed(self.cfg.seed, self.step, micro, self.rank, "target"))
                self.scaler.scale(loss / acc).backward()
            total += loss.detach().float()
        if self.cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return total / acc, audio_s

    def _remix(self, mix: Tensor, tgt: Tensor, micro: int) -> tuple[Tensor, Tensor]:
        from train.gpu_augment import in_batch_remix

        g = self.cfg.in_batch_remix
        if tgt.shape[0] % g:
            raise ConfigError(f"train.in_batch_remix={g} must divide batch_size={tgt.shape[0]}",
                              key="train.in_batch_remix")
        gen = torch.Generator(device=self.device).manual_seed(derive_seed(self.cfg.seed, self.step, micro, "remix"))
        tgt = in_batch_remix(tgt, group_size=g, generator=gen, first_group=self.rank * (tgt.shape[0] // g))
        return tgt.sum(dim=1), tgt

    # -- the loop ----------------------------------------------------------------------------------------------------
    def fit(self, *, resume: bool = True, max_steps: int | None = None) -> TrainResult:
        """Train until ``config.steps`` (or the absolute step ``max_steps``, or ``max_minutes``), resuming from the
        newest checkpoint in ``out`` when ``resume``; log every ``log_every`` steps, validate every
        ``valid.every`` steps and at the end, checkpoint every ``checkpoint_every`` steps and at the end.

        Raises:
            TrainingError: ``resume=False`` on a run folder that has checkpoints, a non-finite loss, data that
                yields no batch, or a checkpoint of another architecture.
        """
        self._start(resume)
        stop = min(self.cfg.steps, max_steps if max_steps is not None else self.cfg.steps)
        st = FitState(stop=stop, final_step=stop, start_step=self.step,
                      valid_every=self.cfg.valid.every if self.valid is not None else 0,
                      budget_s=self.cfg.max_minutes * 60 if self.cfg.max_minutes else None,
                      loss_sum=torch.zeros((), device=self.device), lr=self.optimizer.param_groups[0]["lr"])
        with torch.random.fork_rng(devices=self._rng_devices()):
            batches = self.feed.batches()
            while self.step < st.stop:
                if self._out_of_time(st.budget_s):
                    st.final_step = self.step
                    break
                self._fit_step(st, batches)
        self._finish(st)
        png = self.out / PNG_NAME
        return TrainResult(
            out=self.out, step=self.step, epoch=self.epoch, loss=st.last_loss, valid=st.last_valid,
            checkpoint=st.last_ckpt if st.last_ckpt is not None else latest_checkpoint(self.out),
            csv=self.csv.path, png=png if png.is_file() else None, steps_run=self.step - st.start_step,
            train_seconds=st.train_s, audio_seconds=st.audio_s, resumed_from=self.resumed_from,
            history=st.history,
        )

    def _start(self, resume: bool) -> None:
        """Resume from the newest checkpoint (unless this trainer already ran), cut the CSV after its step."""
        self.out.mkdir(parents=True, exist_ok=True)
        latest = latest_checkpoint(self.out)
        if latest is not None and self.step == 0:
            if not resume:
                raise TrainingError(f"{self.out}: run folder already has checkpoints ({latest.name}); "
                                    "resume it or train into a new folder")
            self.load(latest)
            logger.info("resumed %s at step %d (epoch %d)", latest, self.step, self.epoch)
        if self.is_main:
            if self.csv.path.is_file():
                self.csv.truncate(self.step)
            self._write_run_json()

    def _fit_step(self, st: FitState, batches: Iterator[tuple[Tensor, Tensor]]) -> None:
        """One optimizer step, timed, then the row and the checkpoint that fall on it."""
        st.lr = self.optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        loss, a_s = self.train_step(batches)
        st.loss_sum += loss
        st.n_sum += 1
        logging_now = self.step % self.cfg.log_every == 0
        if self.device.type == "cuda" and logging_now:
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        st.train_s += dt
        self.elapsed_s += dt
        st.audio_s += a_s * self.world
        if logging_now or (st.valid_every and self.step % st.valid_every == 0):
            self._log_row(st)
        if self.step % self.cfg.checkpoint_every == 0:
            st.last_ckpt = self.save()

    def _finish(self, st: FitState) -> None:
        """The last row (and validation) and checkpoint of a call that trained, or the plot of one that did not."""
        if self.step > st.start_step:
            if st.n_sum or (self.valid is not None and st.valid_step != self.step):
                st.final_step = self.step
                self._log_row(st)
            if st.last_ckpt is None or self.step % self.cfg.checkpoint_every:
                st.last_ckpt = self.save()
        elif self.is_main:
            self._plot()

    def _log_row(self, st: FitState) -> None:
        """Log the mean loss since the last row, validating on the final step and every ``valid.every`` steps."""
        row: dict[str, Any] = {"step": self.step, "epoch": self.epoch, "lr": st.lr,
                               "elapsed_s": round(self.elapsed_s, 3)}
        if st.n_sum:
            st.last_loss = self._mean_loss(st.loss_sum, st.n_sum)
            st.loss_sum.zero_()
            st.n_sum = 0
            row["loss"] = st.last_loss
        if self.valid is not None and (self.step == st.final_step
                                       or (st.valid_every and self.step % st.valid_every == 0)):
            st.last_valid, st.valid_step = self._validate(), self.step
            row.update(st.last_valid)
        st.history.append(row)
        if self.is_main:
            self.csv.append(row)
            logger.info("step %d/%d loss %.5g lr %.3g%s%s", self.step, st.stop, st.last_loss, st.lr,
                        pace(self.step - st.start_step, st.train_s, st.stop - self.step),
                        f" valid SDR {st.last_valid.get('valid_sdr', math.nan):.2f} dB"
                        if st.valid_step == self.step else "")

    def _out_of_time(self, budget: float | None) -> bool:
        if budget is None:
            return False
        if not self.ddp:
            return self.elapsed_s >= budget
        flag = torch.tensor([1.0 if self.elapsed_s >= budget else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _mean_loss(self, loss_sum: Tensor, n: int) -> float:
        value = (loss_sum / max(n, 1)).detach().clone()
        if self.ddp:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.world
        out = float(value.item())
        if not math.isfinite(out):
            raise TrainingError(
                f"loss is {out} at step {self.step} (precision {self.amp.name}); lower train.lr, set train.grad_clip "
                "or use precision fp32/bf16"
            )
        return out

    def _validate(self) -> dict[str, float]:
        if not self.is_main or self.valid is None:
            return {}
        return validate(self.model, self.valid, device=self.device, amp=self.amp,
                        batch_size=self.cfg.valid.batch_size)

    def _plot(self) -> None:
        if self.csv.path.is_file():
            try:
                plot_history(self.csv.path, self.out / PNG_NAME, title=f"{self.out.name}: {self.model.name}")
            except Exception as exc:  # a plot must never stop a training run
                logger.warning("could not draw %s: %s", self.out / PNG_NAME, exc)

    def _write_run_json(self) -> None:
        from stemdb.catalog import write_json_atomic

        write_json_atomic({
            "model_config": self.model.config(),
            "train_config": self.cfg.model_dump(mode="json"),
            **self.meta,
            "code_version": code_version(),
            "world_size": self.world,
            "device": str(self.device),
            "precision": self.amp.name,
            "loss": self.cfg.loss_name,
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }, self.out / RUN_JSON)


__all__ = ["FitState", "TrainResult", "Trainer", "TrainingError"]

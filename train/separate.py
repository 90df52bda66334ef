"""Separation with a trained run: whole files in overlapping chunks with a crossfade, stems written as audio.

::

    from train.separate import load_model, separate_file
    model = load_model("runs/unet1")                       # newest checkpoint of the run (or a .pt file)
    paths = separate_file("song.wav", model, "out/song")   # out/song/{vocals,drums,bass,other}.wav

Chunking: the signal is cut into chunks of ``chunk_seconds`` that overlap by ``overlap`` (a fraction of a chunk);
each chunk's estimate is weighted by a window that is flat in the middle and ramps linearly over the overlaps, the
weighted estimates are added and divided by the summed weights. Where chunks overlap the result is a linear
crossfade; elsewhere (and for a model without temporal context) it is exactly the chunk's estimate. The last chunk
is zero-padded; a file shorter than one chunk is one chunk of its own length.

Channels and rates: the output has the input's channel count and sample rate. A stereo model given mono audio sees
it on both channels and its estimates are averaged back to mono; a mono model separates each input channel on its
own; audio at another rate is resampled (soxr) to the model's rate and back.

:func:`evaluate_run` separates every track of a MUSDB18-HQ-layout folder into a temporary folder and scores it with
:mod:`train.evaluate` (BSSEval v4 SDR by museval, SI-SDR), with the unprocessed mixture as the baseline.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stemdb import audio
from stemdb.shaping import fit_length, resample
from train.checkpoint import load_checkpoint, model_from_checkpoint
from train.config import Precision
from train.models import SeparationModel
from train.runtime import AmpPolicy, resolve_device, resolve_precision

logger = logging.getLogger(__name__)

#: Chunk length when neither the caller nor the checkpoint's training config gives one, in seconds.
DEFAULT_CHUNK_S: float = 10.0


def load_model(run: str | Path, *, device: str | torch.device = "cpu") -> SeparationModel:
    """The model of a run folder's newest checkpoint (or of a checkpoint file), in eval mode on ``device``.

    The checkpoint's training crop length is kept as ``model.train_seconds`` (the default chunk length).

    Raises:
        train.checkpoint.CheckpointError: no checkpoint there, or not a stemdb checkpoint.
    """
    ckpt = load_checkpoint(run)
    model = model_from_checkpoint(ckpt, device=device)
    tcfg = ckpt.get("train_config") or {}
    scfg = ckpt.get("stemdb_config") or {}
    model.train_seconds = tcfg.get("seconds") or (scfg.get("remix") or {}).get("seconds")
    model.checkpoint = ckpt["path"]
    return model


def crossfade_window(length: int, overlap: int) -> Tensor:
    """``(length,)`` float32: 1 in the middle, linear ramps ``(k + 1) / (overlap + 1)`` over the first and last
    ``overlap`` samples (strictly positive everywhere, so a lone chunk edge divides back exactly)."""
    if not 0 <= 2 * overlap <= length:
        raise ValueError(f"overlap={overlap} samples must be in [0, length / 2] for length={length}")
    w = torch.ones(length)
    if overlap:
        ramp = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
        w[:overlap] = ramp
        w[length - overlap:] = ramp.flip(0)
    return w


@torch.no_grad()
def separate_tensor(
    model: SeparationModel,
    mixture: Tensor,
    *,
    chunk: int,
    overlap: float = 0.25,
    batch_size: int = 4,
    amp: AmpPolicy | None = None,
) -> Tensor:
    """Chunked separation of one ``(C, N)`` signal with the model's channel count and rate.

    Args:
        mixture: ``(C, N)`` float, ``C == model.channels``, on the model's device.
        chunk: chunk length in samples (a shorter signal is one chunk).
        overlap: overlap of consecutive chunks as a fraction of ``chunk``, in ``[0, 0.5]``.
        batch_size: chunks per forward pass.

    Returns:
        ``(S, C, N)`` float32 estimates in ``model.targets`` order.
    """
    if not 0.0 <= overlap <= 0.5:
        raise ValueError(f"overlap={overlap} is not allowed; allowed: a fraction in [0, 0.5]")
    if chunk < 1 or batch_size < 1:
        raise ValueError(f"chunk={chunk} and batch_size={batch_size} must be >= 1")
    c, n = mixture.shape
    length = min(chunk, n)
    ov = min(round(overlap * length), length // 2)
    hop = length - ov
    count = max(1, math.ceil((n - ov) / hop)) if hop > 0 else 1
    padded = (count - 1) * hop + length
    x = torch.nn.functional.pad(mixture.float(), (0, padded - n))
    w = crossfade_window(length, ov).to(x.device)
    out = torch.zeros(len(model.targets), c, padded, device=x.device)
    wsum = torch.zeros(padded, device=x.device)
    starts = [k * hop for k in range(count)]
    amp = amp or AmpPolicy("fp32", None, False)
    for i in range(0, count, batch_size):
        group = starts[i:i + batch_size]
        batch = torch.stack([x[:, s:s + length] for s in group])
        with amp.autocast(x.device):
            est = model(batch).float()
        for j, s in enumerate(group):
            out[..., s:s + length] += est[j] * w
            wsum[s:s + length] += w
    return out[..., :n] / wsum[:n]


def separate(
    model: SeparationModel,
    mixture: np.ndarray,
    sample_rate: int,
    *,
    chunk_seconds: float | None = None,
    overlap: float = 0.25,
    batch_size: int = 4,
    precision: Precision = "fp32",
) -> dict[str, np.ndarray]:
    """Separate a whole ``(C, N)`` float32 signal at ``sample_rate`` Hz.

    Args:
        chunk_seconds: chunk length; default the run's training crop length, else :data:`DEFAULT_CHUNK_S`.
        overlap: fraction of a chunk shared with the next (crossfaded).
        precision: autocast policy name (``auto`` as in training; ``fp32`` by default).

    Returns:
        ``{stem: (C, N) float32}`` with the input's channel count, length and rate.

    Raises:
        ValueError: the input's channel count cannot be mapped to the model's (see the module docstring).
    """
    if mixture.ndim != 2:
        raise ValueError(f"mixture must be (channels, samples), got shape {mixture.shape}")
    c_in, n_in = mixture.shape
    device = next(model.parameters()).device
    amp = resolve_precision(precision, device)
    seconds = chunk_seconds or getattr(model, "train_seconds", None) or DEFAULT_CHUNK_S
    chunk = max(1, round(seconds * model.sample_rate))
    x = resample(np.asarray(mixture, dtype=np.float32), sample_rate, model.sample_rate)
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device)

    def run(sig: Tensor) -> Tensor:
        return separate_tensor(model, sig, chunk=chunk, overlap=overlap, batch_size=batch_size, amp=amp)

    if c_in == model.channels:
        est = run(t)
    elif model.channels == 1:
        est = torch.cat([run(t[i:i + 1]) for i in range(c_in)], dim=1)
    elif c_in == 1:
        est = run(t.expand(model.channels, -1)).mean(dim=1, keepdim=True)
    else:
        raise ValueError(
            f"cannot separate {c_in}-channel audio with a {model.channels}-channel model; allowed: the same count, "
            "mono input, or a mono model"
        )
    result = {}
    for s, stem in enumerate(model.targets):
        y = resample(est[s].cpu().numpy(), model.sample_rate, sample_rate)
        result[stem] = np.ascontiguousarray(fit_length(y, n_in), dtype=np.float32)
    return result


def separate_file(
    path: str | Path,
    model: SeparationModel | str | Path,
    out: str | Path,
    *,
    stream: int | None = None,
    chunk_seconds: float | None = None,
    overlap: float = 0.25,
    batch_size: int = 4,
    precision: Precision = "fp32",
    device: str = "auto",
    subtype: str = "FLOAT",
) -> dict[str, Path]:
    """Separate one audio file (read through :mod:`stemdb.audio`) into ``<out>/<stem>.wav``.

    Args:
        model: a loaded model, or a run folder / checkpoint file (loaded on ``device``).
        stream: stream of a ``.stem.mp4`` to separate (default 0, the mixture).
        subtype: WAV sample format (``FLOAT`` keeps values above full scale; ``PCM_16`` clips them).

    Returns:
        ``{stem: path written}``.
    """
    if not isinstance(model, SeparationModel):
        model = load_model(model, device=resolve_device(device))
    mix, sr = audio.read(path, stream=stream)
    stems = separate(model, mix, sr, chunk_seconds=chunk_seconds, overlap=overlap, batch_size=batch_size,
                     precision=precision)
    out = Path(out)
    return {stem: audio.write(out / f"{stem}.wav", y, sr, subtype=subtype) for stem, y in stems.items()}


def evaluate_run(
    run: str | Path,
    musdb_root: str | Path,
    *,
    out: str | Path | None = None,
    split: str | None = None,
    tracks: Iterable[str] | None = None,
    estimates: str | Path | None = None,
    workers: int = 1,
    device: str = "auto",
    precision: Precision = "fp32",
    chunk_seconds: float | None = None,
    on_track: Callable[[str, int, int], None] | None = None,
    baseline: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Separate every track of a MUSDB18-HQ-layout folder with a run's model and score the estimates.

    Args:
        run: run folder or checkpoint file.
        musdb_root: ``ROOT/[split/]<track>/{mixture,<stems>}.{wav,flac}`` (or native ``.stem.mp4``).
        out: scores JSON to write (atomic), optional.
        split: only tracks under this split folder (``train``, ``test``...).
        tracks: only these track names.
        estimates: keep the separated stems in this folder (default: a temporary folder, removed afterwards).
        workers: tracks scored in parallel by museval.
        on_track: ``on_track(track, done, total)`` after each separated track.
        baseline: the ``"mixture"`` entry of an earlier result on the same references and tracks: reused
            instead of scoring the unprocessed mixture again (it does not depend on the model).

    Returns:
        :func:`train.evaluate.score_folders`'s ``{"median", "tracks"}`` for the model's targets, plus
        ``"mixture"`` (the unprocessed mixture's scores, same shape), ``"improvement"`` (per stem, median over
        tracks of model minus mixture, :func:`train.evaluate.sdr_improvement`) and ``"run"`` (checkpoint, step).

    Raises:
        train.evaluate.EvaluationError: no tracks match.
    """
    from train.evaluate import score_folders, score_mixture, sdr_improvement, write_scores

    model = load_model(run, device=resolve_device(device))
    found, names = _pick_tracks(Path(musdb_root), split=split, tracks=tracks)
    with tempfile.TemporaryDirectory(prefix="stemdb-eval-") as tmp:
        est_root = Path(estimates) if estimates is not None else Path(tmp)
        for i, name in enumerate(names):
            _separate_track(model, name, found[name], est_root / name, chunk_seconds=chunk_seconds,
                            precision=precision)
            if on_track:
                on_track(name, i + 1, len(names))
        scores = score_folders(est_root, Path(musdb_root), stems=model.targets, workers=workers)
        base = baseline if baseline is not None else score_mixture(Path(musdb_root), tracks=names,
                                                                    stems=model.targets, workers=workers)
    result = {**scores, "mixture": base, "improvement": sdr_improvement(scores, base),
              "run": {"checkpoint": model.checkpoint, "step": _step_of(model.checkpoint)}}
    if out is not None:
        write_scores(result, Path(out))
    return result


def _pick_tracks(root: Path, *, split: str | None, tracks: Iterable[str] | None) -> tuple[dict[str, Path], list[str]]:
    """The reference tracks under ``root`` and the names to evaluate (``tracks``, else all of ``split``).

    Raises:
        train.evaluate.EvaluationError: a named track is missing, or no track is left.
    """
    from train.evaluate import EvaluationError, find_tracks

    found = find_tracks(root, allow_stem_mp4=True)
    names = sorted(n for n, p in found.items() if split is None or _split_of(p) == split)
    if tracks is not None:
        wanted = list(tracks)
        missing = sorted(set(wanted) - set(names))
        if missing:
            raise EvaluationError(f"tracks {missing} not under {root}" + (f" ({split})" if split else ""))
        names = wanted
    if not names:
        raise EvaluationError(f"{root}: no tracks" + (f" in split {split!r}" if split else ""))
    return found, names


def _separate_track(model: SeparationModel, name: str, path: Path, out: Path, *, chunk_seconds: float | None,
                    precision: Precision) -> None:
    """Separate one reference track's mixture (a ``mixture.{wav,flac}`` or a ``.stem.mp4``'s stream 0) into
    ``out``."""
    from train.evaluate import EvaluationError, ReferenceTrack

    ref = ReferenceTrack(name, path)
    if ref.is_stem_mp4:
        src, stream = ref.path, 0
    else:
        src, stream = ref.stem_path("mixture"), None
        if src is None:
            raise EvaluationError(f"{ref.path}: no mixture.wav/.flac to separate")
    separate_file(src, model, out, stream=stream, chunk_seconds=chunk_seconds, precision=precision)


def _split_of(path: Path) -> str | None:
    parent = path.parent.name
    return parent if parent in ("train", "test", "valid", "validation") else None


def _step_of(checkpoint: str) -> int | None:
    stem = Path(checkpoint).stem
    return int(stem[5:]) if stem.startswith("step_") and stem[5:].isdigit() else None


def stems_summary(result: Mapping[str, Any]) -> list[tuple[str, float | None, float | None, float | None]]:
    """``[(stem, median SDR, median SI-SDR, SDR improvement)]`` rows of an :func:`evaluate_run` result."""
    rows = []
    for stem, v in result["median"].items():
        imp = result.get("improvement", {}).get(stem, {}).get("SDR")
        rows.append((stem, v.get("SDR"), v.get("SI-SDR"), imp))
    return rows


__all__ = [
    "DEFAULT_CHUNK_S",
    "crossfade_window",
    "evaluate_run",
    "load_model",
    "separate",
    "separate_file",
    "separate_tensor",
    "stems_summary",
]

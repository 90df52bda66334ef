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

Models without trainable weights (``centre``) need no run: ``load_model("centre")`` builds one by name. A model may
estimate only some of its targets (its ``estimates`` attribute, e.g. the centre model: vocals and accompaniment);
only those are written and scored, the others are reported as not estimated.

Memory: the estimates of the whole signal are one ``(S, C, N)`` float32 buffer, divided in place by the summed
crossfade weights; the input is not copied (only the last chunk is padded); the model sees ``batch_size`` chunks
at a time, by default 4 on a GPU and 1 on the CPU, where batching gains little speed and a batch of four 10 s
chunks needs 1.5-3 GB of activations in Demucs, DCCRN or PHASEN (a 10-minute song then stays under 4 GB).

Channels and rates: the output has the input's channel count and sample rate. A stereo model given mono audio sees
it on both channels and its estimates are averaged back to mono; a mono model separates each input channel on its
own; audio at another rate is resampled (soxr) to the model's rate and back.

:func:`separate_tracks` separates every track of a MUSDB18-HQ-layout folder into a folder of estimates;
:func:`evaluate_run` does that into a temporary folder and scores it with :mod:`train.evaluate` (BSSEval v4 by
museval, SI-SDR, level error), with the mixture divided by the number of stems and the unprocessed mixture as the
baselines.
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
from train.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from train.config import Precision
from train.models import SeparationModel, build_model, model_class, model_names
from train.runtime import AmpPolicy, resolve_device, resolve_precision

logger = logging.getLogger(__name__)

#: Chunk length when neither the caller nor the checkpoint's training config gives one, in seconds.
DEFAULT_CHUNK_S: float = 10.0


def load_model(run: str | Path, *, device: str | torch.device = "cpu") -> SeparationModel:
    """The model of a run folder's newest checkpoint (or of a checkpoint file), in eval mode on ``device``; or, when
    ``run`` is not a path but the name of a model without trainable weights (``"centre"``), that model with its
    default options and targets (``model.checkpoint`` is then ``None``).

    The checkpoint's training crop length is kept as ``model.train_seconds`` (the default chunk length).

    Raises:
        train.checkpoint.CheckpointError: no checkpoint there, or not a stemdb checkpoint.
    """
    untrained = untrained_model(run)
    if untrained is not None:
        untrained.train_seconds = None
        untrained.checkpoint = None
        return untrained.to(device).eval()
    ckpt = load_checkpoint(run)
    model = model_from_checkpoint(ckpt, device=device)
    tcfg = ckpt.get("train_config") or {}
    scfg = ckpt.get("stemdb_config") or {}
    model.train_seconds = tcfg.get("seconds") or (scfg.get("remix") or {}).get("seconds")
    model.checkpoint = ckpt["path"]
    return model


def untrained_model(run: str | Path) -> SeparationModel | None:
    """A model named ``run`` that needs no training (its class has ``trainable = False``), built with its default
    targets and options; ``None`` when ``run`` is an existing path or not a model name.

    Raises:
        train.checkpoint.CheckpointError: ``run`` names a model that needs training (pass its run folder).
    """
    name = str(run)
    if Path(run).exists() or name not in model_names():
        return None
    cls = model_class(name)
    if getattr(cls, "trainable", True):
        raise CheckpointError(f"{name}: model {name!r} needs trained weights; pass its run folder or checkpoint "
                              f"file (models usable by name: {', '.join(untrained_names()) or 'none'})")
    return build_model(name, targets=cls.default_targets)


def untrained_names() -> tuple[str, ...]:
    """Names of the registered models without trainable weights (usable without a checkpoint)."""
    return tuple(n for n in model_names() if not getattr(model_class(n), "trainable", True))


def estimated_targets(model: SeparationModel) -> tuple[str, ...]:
    """The targets ``model`` estimates: its ``estimates`` attribute when it has one, else all its targets."""
    return tuple(getattr(model, "estimates", None) or model.targets)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter, else of its first buffer, else the CPU."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def default_batch_size(device: torch.device) -> int:
    """Chunks per forward pass when the caller gives none: 4 on a GPU, 1 on the CPU (bounded memory)."""
    return 4 if device.type == "cuda" else 1


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
    x = mixture.float()
    w = crossfade_window(length, ov).to(x.device)
    out = torch.zeros(len(model.targets), c, n, device=x.device)
    wsum = torch.zeros(n, device=x.device)
    starts = [k * hop for k in range(count)]
    amp = amp or AmpPolicy("fp32", None, False)
    for i in range(0, count, batch_size):
        group = starts[i:i + batch_size]
        batch = torch.stack([torch.nn.functional.pad(x[:, s:s + length], (0, max(0, s + length - n)))
                             for s in group])  # only the last chunk is zero-padded
        with amp.autocast(x.device):
            est = model(batch).float()
        for j, s in enumerate(group):
            valid = min(length, n - s)
            out[..., s:s + valid] += est[j, ..., :valid] * w[:valid]
            wsum[s:s + valid] += w[:valid]
    out /= wsum
    return out


def separate(
    model: SeparationModel,
    mixture: np.ndarray,
    sample_rate: int,
    *,
    chunk_seconds: float | None = None,
    overlap: float = 0.25,
    batch_size: int | None = None,
    precision: Precision = "fp32",
) -> dict[str, np.ndarray]:
    """Separate a whole ``(C, N)`` float32 signal at ``sample_rate`` Hz.

    Args:
        chunk_seconds: chunk length; default the run's training crop length, else :data:`DEFAULT_CHUNK_S`.
        overlap: fraction of a chunk shared with the next (crossfaded).
        batch_size: chunks per forward pass; ``None``: :func:`default_batch_size` of the model's device.
        precision: autocast policy name (``auto`` as in training; ``fp32`` by default).

    Returns:
        ``{stem: (C, N) float32}`` with the input's channel count, length and rate, for the targets the model
        estimates (:func:`estimated_targets`).

    Raises:
        ValueError: the input's channel count cannot be mapped to the model's (see the module docstring).
    """
    if mixture.ndim != 2:
        raise ValueError(f"mixture must be (channels, samples), got shape {mixture.shape}")
    c_in, n_in = mixture.shape
    device = model_device(model)
    amp = resolve_precision(precision, device)
    seconds = chunk_seconds or getattr(model, "train_seconds", None) or DEFAULT_CHUNK_S
    chunk = max(1, round(seconds * model.sample_rate))
    batch_size = batch_size or default_batch_size(device)
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
    wanted = estimated_targets(model)
    for s, stem in enumerate(model.targets):
        if stem not in wanted:
            continue
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
    batch_size: int | None = None,
    precision: Precision = "fp32",
    device: str = "auto",
    subtype: str = "FLOAT",
) -> dict[str, Path]:
    """Separate one audio file (read through :mod:`stemdb.audio`) into ``<out>/<stem>.wav``.

    Args:
        model: a loaded model, or a run folder / checkpoint file (loaded on ``device``), or the name of a model
            without trainable weights (``"centre"``).
        stream: stream of a ``.stem.mp4`` to separate (default 0, the mixture).
        subtype: WAV sample format (``FLOAT`` keeps values above full scale; ``PCM_16`` clips them).

    Returns:
        ``{stem: path written}`` for the targets the model estimates.
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
        run: run folder or checkpoint file, or the name of a model without trainable weights (``"centre"``).
        musdb_root: ``ROOT/[split/]<track>/{mixture,<stems>}.{wav,flac}`` (or native ``.stem.mp4``).
        out: scores JSON to write (atomic), optional.
        split, tracks: only tracks under this split folder (``train``, ``test``...); only these track names.
        estimates: keep the separated stems in this folder (default: a temporary folder, removed afterwards).
        workers: tracks scored in parallel by museval (at most; bounded by memory, see
            :func:`train.evaluate.scoring_workers`).
        on_track: ``on_track(track, done, total)`` after each separated track.
        baseline: an earlier result on the same references and tracks: its ``"mixture"`` and ``"mixture_n"`` are
            reused instead of scoring the baselines again (they do not depend on the model).

    Returns:
        :func:`train.evaluate.score_folders`'s ``{"median", "tracks"}`` for the model's targets (those it does not
        estimate: ``None``, listed under ``"not_estimated"``), the baselines ``"mixture_n"`` (mixture / number of
        estimated targets) and ``"mixture"``, ``"improvement_n"`` and ``"improvement"`` (median over tracks of
        model minus baseline, :func:`train.scores.sdr_improvement`), ``"run"`` (checkpoint, step).

    Raises:
        train.evaluate.EvaluationError: no tracks match.
    """
    from train.evaluate import score_folders, score_mixture
    from train.scores import mark_not_estimated, sdr_improvement, write_scores

    model = load_model(run, device=resolve_device(device))
    with tempfile.TemporaryDirectory(prefix="stemdb-eval-") as tmp:
        est_root = Path(estimates) if estimates is not None else Path(tmp)
        names = separate_tracks(model, musdb_root, est_root, split=split, tracks=tracks,
                                chunk_seconds=chunk_seconds, precision=precision, on_track=on_track)
        stems = estimated_targets(model)
        scores = score_folders(est_root, Path(musdb_root), stems=stems, workers=workers)
        base = {key: baseline[key] if baseline is not None else score_mixture(
                    Path(musdb_root), tracks=names, stems=stems, scale=scale, workers=workers)
                for key, scale in (("mixture_n", 1.0 / len(stems)), ("mixture", 1.0))}
    result = {**scores, **base, "improvement_n": sdr_improvement(scores, base["mixture_n"]),
              "improvement": sdr_improvement(scores, base["mixture"]),
              "run": {"checkpoint": model.checkpoint, "step": _step_of(model.checkpoint)}}
    if len(stems) < len(model.targets):
        mark_not_estimated(result, [t for t in model.targets if t not in stems],
                           f"model {model.name!r} estimates only {', '.join(stems)}")
    if out is not None:
        write_scores(result, Path(out))
    return result


def separate_tracks(
    model: SeparationModel,
    musdb_root: str | Path,
    out: str | Path,
    *,
    split: str | None = None,
    tracks: Iterable[str] | None = None,
    chunk_seconds: float | None = None,
    precision: Precision = "fp32",
    on_track: Callable[[str, int, int], None] | None = None,
) -> list[str]:
    """Separate the mixture of every track of a MUSDB18-HQ-layout folder (or of ``split`` / ``tracks``) into
    ``<out>/<track>/<stem>.wav`` (float WAV); returns the track names in order.

    Raises:
        train.evaluate.EvaluationError: a named track is missing, no track is left, or a track has no mixture.
    """
    found, names = _pick_tracks(Path(musdb_root), split=split, tracks=tracks)
    for i, name in enumerate(names):
        _separate_track(model, name, found[name], Path(out) / name, chunk_seconds=chunk_seconds,
                        precision=precision)
        if on_track:
            on_track(name, i + 1, len(names))
    return names


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


def _step_of(checkpoint: str | None) -> int | None:
    if checkpoint is None:
        return None
    stem = Path(checkpoint).stem
    return int(stem[5:]) if stem.startswith("step_") and stem[5:].isdigit() else None


def stems_summary(result: Mapping[str, Any]) -> list[tuple[str, float | None, float | None, float | None,
                                                          float | None]]:
    """``[(stem, median SDR, median SI-SDR, SDR improvement over mixture/N, over the mixture)]`` rows of an
    :func:`evaluate_run` result (``None`` where not scored; a stem under ``"not_estimated"`` is among them with
    ``None`` values)."""
    rows = []
    for stem, v in result["median"].items():
        imp_n = result.get("improvement_n", {}).get(stem, {}).get("SDR")
        imp = result.get("improvement", {}).get(stem, {}).get("SDR")
        rows.append((stem, v.get("SDR"), v.get("SI-SDR"), imp_n, imp))
    return rows


__all__ = [
    "DEFAULT_CHUNK_S",
    "crossfade_window",
    "default_batch_size",
    "estimated_targets",
    "evaluate_run",
    "load_model",
    "model_device",
    "separate",
    "separate_file",
    "separate_tensor",
    "separate_tracks",
    "stems_summary",
    "untrained_model",
    "untrained_names",
]

"""Measurement over blocks: :func:`stemdb.measure.measure`'s results for a stem too long to hold in memory.

:func:`measure_blocks` takes the samples as consecutive ``(channels, frames)`` blocks (:func:`stemdb.audio.blocks`
decodes a file so) and keeps about one block, the filter state and one bounded excerpt in memory, so the peak
memory of a measurement does not grow with the stem's length. It gives what :func:`~stemdb.measure.measure` gives
on the whole array:

- the same content hash: channel 0's int16 samples go into the XXH3 stream as they come (the header needs the
  frame count, known from the file's header); the other channels' int16 go to an unnamed temp file each and are
  hashed after channel 0 (the hashed layout is channel after channel). With no frame count (PyAV formats state
  only a duration) channel 0 is spilled as well and the header hashed at the end;
- the same peak, clipping count, silence windows and window energies (whole windows per call: the same sums);
- the K-weighting filter state carried from block to block (:func:`stemdb.measure_kernels.k_hop_energies_carried`),
  so the loudness and the 100 ms profile agree with the whole-array pass to rounding (1e-9, tested);
- tempo, beats and the quality columns from one excerpt: the middle :data:`EXCERPT_S` seconds (the whole stem
  when it is no longer), beat times shifted to the stem's time. ``extra["excerpt_s"]`` records ``(start, end)``.

An int16 cache file (:class:`stemdb.stem_cache.Pcm16Writer`) can be written from the same pass.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import IO

import numpy as np
import xxhash

from stemdb.bs1770 import (
    HOP_S,
    active_runs,
    active_windows,
    block_energies_from_hops,
    gated_loudness,
    hop_bounds,
    loudness_profile,
    weight_vector,
    window_bounds,
    window_len,
)
from stemdb.measure import Backend, Measurements, estimate_tempo
from stemdb.measure_kernels import (
    carried_state,
    hash_header,
    k_hop_energies_carried,
    resolve_backend,
    sample_stats,
)

#: Tempo and quality analyse at most this many seconds of a stem: the middle of it (the whole of a shorter one).
EXCERPT_S: float = 600.0
#: Spilled PCM is hashed in reads of this many bytes.
_HASH_READ = 1 << 22


@dataclass(frozen=True)
class Streamed:
    """What :func:`measure_blocks` found: the measurements, the frame count, and the excerpt analysed for tempo
    (and by the caller for quality): ``(channels, frames)`` float32 starting at frame ``excerpt_start``."""

    measurements: Measurements
    frames: int
    excerpt: np.ndarray
    excerpt_start: int


class PcmHash:
    """:func:`stemdb.measure_kernels.hash_pcm` of int16 PCM that arrives block by block.

    Args:
        rate: Hz.
        channels: channel count.
        frames: the frame count when known in advance (channel 0 is hashed as it comes), else ``None``.
    """

    def __init__(self, rate: int, channels: int, frames: int | None) -> None:
        self.rate, self.channels, self.frames, self.got = rate, channels, frames, 0
        self.h = xxhash.xxh3_128()
        first_spilled = 0 if frames is None else 1
        self.spills: list[IO[bytes] | None] = [None] * first_spilled + [
            tempfile.TemporaryFile() for _ in range(first_spilled, channels)]  # noqa: SIM115 - closed by close()
        if frames is not None:
            self.h.update(hash_header(rate, channels, frames))

    def write(self, pcm: np.ndarray) -> None:
        """Add ``(channels, samples)`` int16."""
        for c, spill in enumerate(self.spills):
            row = np.ascontiguousarray(pcm[c], dtype="<i2")
            (self.h.update if spill is None else spill.write)(row.data)
        self.got += pcm.shape[1]

    def hexdigest(self) -> str:
        """The digest (32 hex characters); the spill files are closed (deleted)."""
        if self.frames is None:
            self.h.update(hash_header(self.rate, self.channels, self.got))
        elif self.got != self.frames:
            self.close()
            raise ValueError(f"{self.got} frames hashed, {self.frames} announced")
        for spill in self.spills:
            if spill is not None:
                spill.seek(0)
                while chunk := spill.read(_HASH_READ):
                    self.h.update(chunk)
        self.close()
        return self.h.hexdigest()

    def close(self) -> None:
        for spill in self.spills:
            if spill is not None:
                spill.close()


class _Carry:
    """Samples held back until a whole hop or window is there: ``take(block)`` gives the held samples with the
    block appended; ``hold(rest)`` keeps the unprocessed tail."""

    def __init__(self, channels: int) -> None:
        self.buf = np.zeros((channels, 0), np.float32)

    def take(self, block: np.ndarray) -> np.ndarray:
        return np.concatenate([self.buf, block], axis=1) if self.buf.shape[1] else block

    def hold(self, rest: np.ndarray) -> None:
        self.buf = rest.copy()


class _HopPass:
    """K-weighted energy per 100 ms hop (:func:`stemdb.bs1770.hop_bounds` boundaries), block by block."""

    def __init__(self, channels: int, rate: int, kernels) -> None:  # noqa: ANN001
        self.rate, self.kernels, self.carry = rate, kernels, _Carry(channels)
        self.state = carried_state(channels, kernels)
        self.hop, self.start, self.parts = 0, 0, []  # next hop index and its first sample

    def bounds(self, k0: int, k1: int) -> np.ndarray:
        """Absolute boundaries of hops ``k0 .. k1`` (the arithmetic of :func:`stemdb.bs1770.hop_bounds`)."""
        return np.round(np.arange(k0, k1 + 1) * (HOP_S * self.rate)).astype(np.int64)

    def feed(self, block: np.ndarray) -> None:
        x, x_start = self.carry.take(block), self.start
        b = self.bounds(self.hop, self.hop + int(x.shape[1] / (HOP_S * self.rate)) + 2)
        whole = int(np.searchsorted(b, x_start + x.shape[1], side="right")) - 1  # hops that end inside x
        if whole > 0:
            rel = b[: whole + 1] - x_start
            self.parts.append(k_hop_energies_carried(x[:, : rel[-1]], self.rate, rel, self.kernels, self.state))
            self.hop, self.start = self.hop + whole, int(b[whole])
        self.carry.hold(x[:, self.start - x_start :])

    def finish(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(hop boundaries, energies (channels, hops))`` as :func:`stemdb.bs1770.hop_bounds` and
        :func:`stemdb.measure_kernels.k_hop_energies` give them for ``n`` frames."""
        hops = hop_bounds(n, self.rate)
        n_hops = max(len(hops) - 1, 0)
        tail = self.carry.buf
        if tail.shape[1] and self.hop < n_hops:  # the partial hop at the end
            rel = self.bounds(self.hop, self.hop + 1) - self.start
            self.parts.append(k_hop_energies_carried(tail, self.rate, rel, self.kernels, self.state))
        done = np.concatenate(self.parts, axis=1) if self.parts else np.zeros((tail.shape[0], 0))
        out = np.zeros((tail.shape[0], n_hops))
        out[:, : min(n_hops, done.shape[1])] = done[:, :n_hops]
        return hops, out


class _StatsPass:
    """Window energies, peak, sum of squares, clipped count and int16 PCM (to the hash and the cache writer)."""

    def __init__(self, channels: int, win: int, clip_level: float, kernels, sinks: list) -> None:  # noqa: ANN001
        self.win, self.clip, self.kernels, self.sinks = win, clip_level, kernels, sinks
        self.carry = _Carry(channels)
        self.energy: list[np.ndarray] = []
        self.peak, self.sum_sq, self.clipped, self.bad = 0.0, 0.0, 0, 0

    def feed(self, block: np.ndarray, *, last: bool = False) -> None:
        x = self.carry.take(block)
        upto = x.shape[1] if last else x.shape[1] // self.win * self.win
        if upto:
            bounds = np.append(np.arange(0, upto, self.win, dtype=np.int64), np.int64(upto))
            s = sample_stats(x[:, :upto], bounds, self.clip, True, self.kernels)
            if not math.isfinite(s.sum_sq):
                self.bad += int(np.count_nonzero(~np.isfinite(x[:, :upto])))
            self.energy.append(s.window_energy)
            self.peak, self.sum_sq, self.clipped = max(self.peak, s.peak), self.sum_sq + s.sum_sq, self.clipped + s.clipped
            for sink in self.sinks:
                sink.write(s.pcm)
        self.carry.hold(x[:, upto:])


class _Excerpt:
    """Copies frames ``[start, start + length)`` of the stream into one array (shorter if the stream ends)."""

    def __init__(self, channels: int, start: int, length: int) -> None:
        self.start, self.a, self.got = start, np.zeros((channels, length), np.float32), 0

    def feed(self, block: np.ndarray, at: int) -> None:
        lo, hi = max(at, self.start), min(at + block.shape[1], self.start + self.a.shape[1])
        if hi > lo:
            self.a[:, lo - self.start : hi - self.start] = block[:, lo - at : hi - at]
            self.got = max(self.got, hi - self.start)

    def array(self) -> np.ndarray:
        return self.a[:, : self.got]


def measure_blocks(
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    channels: int,
    *,
    frames: int | None = None,
    frames_hint: int | None = None,
    silence_db: float = -45.0,
    window_s: float = 0.1,
    clip_level: float = 0.999,
    tempo: bool = True,
    min_gap_s: float = 0.0,
    channel_weights: tuple[float, ...] | None = None,
    backend: Backend = "auto",
    excerpt_s: float = EXCERPT_S,
    sinks: Iterable = (),
) -> Streamed:
    """:func:`stemdb.measure.measure` of the concatenation of ``blocks``, holding about one block in memory.

    Args:
        blocks: consecutive ``(channels, frames)`` float32 blocks, full scale ±1.0 (any lengths).
        sample_rate: Hz.
        channels: the blocks' channel count.
        frames: the total frame count when known (the hash then streams channel 0; a different count fails).
        frames_hint: an approximate count (a container's stated duration) to place the excerpt when ``frames`` is
            unknown; without either the excerpt is the first ``excerpt_s`` seconds.
        silence_db, window_s, clip_level, tempo, min_gap_s, channel_weights, backend: as for ``measure``.
        excerpt_s: length (seconds) of the middle excerpt that tempo (and the caller's quality) analyse.
        sinks: objects with ``write(pcm)``, given each processed stretch of ``(channels, samples)`` int16 in order
            (a :class:`stemdb.stem_cache.Pcm16Writer`).

    Returns:
        :class:`Streamed`; ``extra["excerpt_s"]`` of its measurements holds the excerpt's ``(start, end)``.

    Raises:
        ValueError: bad parameter, a block of another channel count, NaN/inf samples, or not ``frames`` frames.
    """
    rate, weights, kernels = _setup(sample_rate, channels, window_s, clip_level, channel_weights, backend)
    hasher = PcmHash(rate, channels, frames)
    stats = _StatsPass(channels, window_len(window_s, rate), clip_level, kernels, [hasher, *sinks])
    hop = _HopPass(channels, rate, kernels)
    excerpt = _excerpt_for(channels, frames if frames is not None else frames_hint, rate, excerpt_s)
    n = 0
    try:
        for block in blocks:
            if block.ndim != 2 or block.shape[0] != channels:
                raise ValueError(f"a block has shape {block.shape}; expected ({channels}, frames)")
            stats.feed(block)
            hop.feed(block)
            excerpt.feed(block, n)
            n += block.shape[1]
        stats.feed(np.zeros((channels, 0), np.float32), last=True)
        if stats.bad:
            raise ValueError(f"audio has {stats.bad} NaN/inf samples; measurements need finite samples")
        digest = hasher.hexdigest()
    finally:
        hasher.close()
    m = _measurements(stats, hop, n, rate, weights, silence_db, min_gap_s, digest, kernels)
    return Streamed(_with_tempo(m, excerpt, rate, tempo), n, excerpt.array(), excerpt.start)


def _with_tempo(m: Measurements, excerpt: _Excerpt, rate: int, tempo: bool) -> Measurements:
    """``m`` with tempo and beats (stem time) estimated on the excerpt, and ``extra["excerpt_s"]``."""
    clip = excerpt.array()
    tempo_bpm, beats = estimate_tempo(clip, rate) if tempo and m.peak_dbfs > -math.inf and math.isfinite(m.lufs) \
        else (None, [])
    shift = excerpt.start / rate
    extra = {**m.extra, "excerpt_s": (shift, (excerpt.start + clip.shape[1]) / rate)}
    return replace(m, tempo_bpm=tempo_bpm, beats_s=[t + shift for t in beats] if shift else beats, extra=extra)


def _setup(sample_rate: int, channels: int, window_s: float, clip_level: float,
           channel_weights: tuple[float, ...] | None, backend: Backend) -> tuple[int, np.ndarray, object]:
    from stemdb.measure import _check_positive, _check_rate

    rate = _check_rate(sample_rate)
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    _check_positive(window_s, "window_s")
    _check_positive(clip_level, "clip_level")
    return rate, weight_vector(channels, channel_weights), resolve_backend(backend)


def _excerpt_for(channels: int, frames: int | None, rate: int, excerpt_s: float) -> _Excerpt:
    length = max(1, int(round(excerpt_s * rate)))
    start = 0 if frames is None or frames <= length else (frames - length) // 2
    return _Excerpt(channels, start, length)


def _measurements(stats: _StatsPass, hop: _HopPass, n: int, rate: int, weights: np.ndarray, silence_db: float,
                  min_gap_s: float, digest: str, kernels) -> Measurements:  # noqa: ANN001
    """The :class:`Measurements` from the two passes, as :func:`stemdb.measure.measure` forms them."""
    from stemdb.measure import _db

    channels = hop.carry.buf.shape[0]
    hops, hop_energy = hop.finish(n)
    lufs = gated_loudness(block_energies_from_hops(hop_energy, n, rate, weights))
    win_bounds = window_bounds(n, stats.win)
    energy = np.concatenate(stats.energy) if stats.energy else np.zeros(0)
    win_lengths = np.diff(win_bounds)
    active_mask = active_windows(energy, win_lengths * channels, silence_db)
    total = channels * n
    return Measurements(
        lufs=lufs, peak_dbfs=_db(stats.peak, 20.0), rms_dbfs=_db(stats.sum_sq / total if total else 0.0, 10.0),
        clipping_ratio=stats.clipped / total if total else 0.0,
        silence_ratio=1.0 if n == 0 else float(win_lengths[~active_mask].sum() / n),
        active=active_runs(active_mask, win_bounds, rate, min_gap_s), tempo_bpm=None, beats_s=[],
        content_hash=digest, loudness_100ms=loudness_profile(hop_energy, hops, n),
        extra={"digital_silence": stats.peak == 0.0, "backend": "numpy" if kernels is None else "numba"},
    )

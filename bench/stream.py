"""CPU cost per mixture of the training stream vs a naive source-folder dataset, both through a DataLoader.

Run: .venv/bin/python bench/stream.py [--n 480 --batch 16 --workers 2 --seconds 6 --profile]

Corpus: the fixture stems (MUSDB18-HQ excerpts and loose stems) converted to 44.1 kHz stereo 16-bit WAV, tiled to
30 s, in several copies with distinct gains, in a temp folder; a catalogue of it (``ingest_sources``, tempo off).

Measured, same run, same DataLoader settings (batch, workers, persistent workers), no pitch/stretch anywhere,
steady state (the second of two epochs); the loop copies each batch into a preallocated buffer, as a host-to-device
copy would read it, on one thread (``--sink-threads``, default 1: what the CUDA driver's copy of pageable memory
costs; torch's default of one thread per core adds its OpenMP threads' overhead to every variant alike, about
0.4 ms per int16 mixture here, and is kept measurable with ``--sink-threads 2``):
(a) naive baseline, written here the way Open-Unmix's source-folder dataset works: per mixture open 4 random files
    (one per target), read a random 6 s window of each (float32), random gain, random channel swap, stack, sum;
    default collate;
(b) ``RemixStream`` per item through a plain DataLoader (default collate), float32 and int16;
(c) ``StreamLoader`` (batches rendered in place in reused shared-memory buffers), float32 and int16;
(d) as (b) and (c) on a copy of the catalogue with the int16 stem cache (``ingest.cache: int16``: windows are slices
    of memory maps instead of decoded reads; its disk cost is printed).
Also: the renderer alone in this process (plan + render into reused buffers) with where its time goes (and at the
mono / 33,075 Hz / 22,050 Hz options), and the pipeline alone (a fixed pre-rendered item: collate, transport,
consumer copy).
CPU time is of all processes: this process and its workers (``getrusage`` and psutil for live workers).
Goal (issue 17): <= 4 ms per 6 s 4-stem mixture, so >= 6x faster than (a); the ratio (a) / best stream is printed
last.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import os
import pstats
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import psutil
import soxr
import torch
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from augment.config import load_project as load_config  # noqa: E402
from stemdb import audio, stem_cache  # noqa: E402
from stemdb.config import IngestConfig, SourceConfig, StemsLayout  # noqa: E402
from stemdb.ingest import ingest_sources  # noqa: E402
from train.data import IndexedStream, RemixStream, StreamLoader  # noqa: E402

TARGETS = ("vocals", "drums", "bass", "other")
RATE = 44100


def build_corpus(dst: Path, *, copies: int = 4, seconds: int = 30) -> dict[str, list[Path]]:
    """Fixture stems as 44.1 kHz stereo PCM_16 WAV tiled to ``seconds``, ``copies`` times with distinct gains."""
    rng = np.random.default_rng(0)
    srcs = [p for p in sorted((ROOT / "tests" / "data" / "musdb" / "train").rglob("*.wav")) if p.stem != "mixture"]
    srcs += sorted((ROOT / "tests" / "data" / "stems").rglob("*.wav"))
    files: dict[str, list[Path]] = {t: [] for t in TARGETS}
    for p in srcs:
        kind = p.stem if p.parent.parent.name == "train" else p.parent.name
        target = "other" if kind == "keys" else kind
        a, sr = audio.read(p)
        if sr != RATE:
            a = np.ascontiguousarray(soxr.resample(a.T, sr, RATE).T, dtype=np.float32)
        if not np.any(a):
            continue  # an all-silent stem (an instrumental's vocals) is no use to either side
        a = np.repeat(a, 2, axis=0) if a.shape[0] == 1 else a[:2]
        a = np.tile(a, int(np.ceil(seconds * RATE / a.shape[1])))[:, : seconds * RATE]
        for i in range(copies):
            out = dst / kind / f"{p.parent.name}-{p.stem}-{i}.wav"
            audio.write(out, a * np.float32(rng.uniform(0.3, 0.9)), RATE)
            files[target].append(out)
    return files


class NaiveSourceFolders(Dataset):
    """The baseline: Open-Unmix's source-folder dataset, 4 targets returned (mixture (C, T), stems (S, C, T))."""

    def __init__(self, files: dict[str, list[Path]], *, seconds: float, n: int, seed: int) -> None:
        self.files, self.seconds, self.n, self.seed = files, seconds, n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rnd = random.Random(self.seed * 1_000_003 + i)
        stems = []
        for t in TARGETS:
            path = rnd.choice(self.files[t])
            info = audio.info(path)
            frames = int(self.seconds * info.sample_rate)
            start = rnd.randint(0, max(0, info.frames - frames))
            x, _ = audio.read(path, start=start, frames=frames)
            x = torch.from_numpy(x) * rnd.uniform(0.25, 1.25)
            if rnd.random() < 0.5:
                x = torch.flip(x, [0])
            stems.append(x)
        y = torch.stack(stems)
        return y.sum(0), y


def cpu_all() -> float:
    """CPU seconds (user + system) of this process, its live child processes (persistent DataLoader workers, via
    psutil) and its terminated, joined ones (``getrusage``)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    live = 0.0
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            t = child.cpu_times()
            live += t.user + t.system
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime + live


def measure(batches: Iterable, n: int, sink_threads: int = 1) -> tuple[float, float]:
    """(CPU ms per mixture over all processes, wall ms per mixture) to draw an epoch of ``n`` mixtures and copy each
    batch into a reused buffer (what a host-to-device copy would read) with ``sink_threads`` torch threads in this
    process. Steady state: the second of two epochs (persistent workers everywhere; worker start and one-time buffer
    setup are left out)."""
    sinks: dict[tuple, torch.Tensor] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(sink_threads)
    try:
        _epoch(batches, sinks)
        gc.collect()
        c0, t0 = cpu_all(), time.perf_counter()
        got = _epoch(batches, sinks)
        gc.collect()
        c1, t1 = cpu_all(), time.perf_counter()
    finally:
        torch.set_num_threads(threads)
    if got != n:
        raise RuntimeError(f"drew {got} mixtures, expected {n}")
    return (c1 - c0) / n * 1e3, (t1 - t0) / n * 1e3


def _epoch(batches: Iterable, sinks: dict[tuple, torch.Tensor]) -> int:
    got = 0
    it = iter(batches)
    for batch in it:
        mix, tgt = batch[0], batch[1]
        for x in (mix, tgt):
            key = (tuple(x.shape), x.dtype)
            if key not in sinks:
                sinks[key] = torch.empty(x.shape, dtype=x.dtype)
            sinks[key].copy_(x)
        got += mix.shape[0]
    del it
    return got


def render_only(ds: RemixStream, n: int) -> float:
    """CPU ms per mixture of plan (a batch at a time, as the loaders do) + render into reused buffers, in this
    process (no DataLoader)."""
    mix = np.empty((ds.channels, ds.frames), np.float32)
    tgt = np.empty((len(ds.targets), ds.channels, ds.frames), np.float32)
    ds.render_into(0, 0, mix, tgt)
    c0 = time.process_time()
    _render_all(ds, n, mix, tgt)
    return (time.process_time() - c0) / n * 1e3


def _render_all(ds: RemixStream, n: int, mix: np.ndarray, tgt: np.ndarray) -> None:
    for start in range(0, n, ds.batch_size):
        idx = np.arange(start, min(n, start + ds.batch_size))
        ds.plan_ahead(idx, 0)
        for i in idx.tolist():
            ds.render_into(i, 0, mix, tgt)


class FixedItems(Dataset):
    """Pipeline cost only: every item is the same pre-rendered mixture (no reading, no rendering)."""

    def __init__(self, item: tuple[torch.Tensor, torch.Tensor], n: int) -> None:
        self.item, self.n = item, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.item


class FixedStream(IndexedStream):
    """Pipeline cost only for the StreamLoader: 'rendering' is one copy of a pre-rendered mixture, already in the
    stream's dtype, into the buffer."""

    def __init__(self, ds: RemixStream, n: int, dtype: str) -> None:
        super().__init__(seed=0, epoch_length=n, dtype=dtype, batch_size=ds.batch_size)
        self._mix, self._tgt = (x.numpy() for x in ds.item(0, 0))
        if dtype == "int16":
            self._mix, self._tgt = ((x * np.float32(32768.0)).astype(np.int16) for x in (self._mix, self._tgt))
        self._shape = (ds.targets, ds.channels, ds.frames)

    targets = property(lambda self: self._shape[0])
    channels = property(lambda self: self._shape[1])
    frames = property(lambda self: self._shape[2])
    on_grid16 = property(lambda self: True)

    def render_into(self, index: int, epoch: int, mixture: np.ndarray, targets: np.ndarray,
                    aug: np.ndarray | None = None) -> None:
        np.copyto(mixture, self._mix)
        np.copyto(targets, self._tgt)

    def _render_float(self, index: int, epoch: int, mixture: np.ndarray, targets: np.ndarray) -> None:
        raise AssertionError("unused: render_into copies the item in the stream's dtype")


def render_breakdown(ds: RemixStream, n: int, top: int = 8) -> list[tuple[str, float]]:
    """Where the renderer's time goes: the whole item, then the ``top`` functions of stemdb's own packages with the
    most cumulative CPU time, each in ms per mixture (cProfile's view of ``render_into``, a public method, so no
    private name is reached into; profiling inflates the absolute figures, the whole item is timed without it)."""
    total = render_only(ds, n)
    stats = _profile_stats(ds, n)
    ours = [(f"{Path(file).relative_to(ROOT)}:{func}", cum) for (file, _line, func), (_cc, _nc, _tt, cum, _callers)
            in stats.stats.items() if file.startswith(str(ROOT)) and "bench" not in Path(file).parts]
    ours.sort(key=lambda kv: -kv[1])
    return [("whole item (plan + render), unprofiled", total)] + [(k, v / n * 1e3) for k, v in ours[:top]]


def _profile_stats(ds: RemixStream, n: int) -> pstats.Stats:
    mix = np.empty((ds.channels, ds.frames), np.float32)
    tgt = np.empty((len(ds.targets), ds.channels, ds.frames), np.float32)
    prof = cProfile.Profile()
    prof.enable()
    _render_all(ds, n, mix, tgt)
    prof.disable()
    return pstats.Stats(prof, stream=io.StringIO())


def profile_render(ds: RemixStream, n: int) -> str:
    s = io.StringIO()
    stats = _profile_stats(ds, n)
    stats.stream = s
    stats.sort_stats("tottime").print_stats(12)
    return s.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=480, help="mixtures per variant (a multiple of --batch)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers (capped at the machine's cores)")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--sink-threads", type=int, default=1, help="torch threads of the loop's copy of each batch")
    ap.add_argument("--profile", action="store_true", help="also print cProfile's view of the renderer")
    ap.add_argument("--smoke", action="store_true", help="the same code path at a size that runs in seconds")
    args = ap.parse_args(argv)
    corpus = {"copies": 4, "seconds": 30}
    if args.smoke:
        args.n, args.batch, args.workers, args.seconds = 8, 4, 1, 1.0
        corpus = {"copies": 1, "seconds": 4}
    cores = os.cpu_count() or 1
    if args.workers > cores:
        print(f"note: {cores} cores: --workers {args.workers} capped to {cores}")
        args.workers = cores
    n = args.n - args.n % args.batch
    if n < args.batch:
        ap.error(f"--n {args.n} gives no full batch of {args.batch}")
    work = Path(tempfile.mkdtemp(prefix="stemdb-bench-stream-"))
    try:
        files = build_corpus(work / "stems", **corpus)
        kinds = {k: k for k in ("vocals", "drums", "bass", "keys", "other")}
        ingest_sources([SourceConfig(name="bench", root=work / "stems", layout=StemsLayout(kinds=kinds))],
                       work / "cat", cfg=IngestConfig(tempo=False, workers=1))
        shutil.copytree(work / "cat", work / "cat-cache")
        stem_cache.fill(work / "cat-cache")
        cache_files, cache_bytes = stem_cache.cache_size(work / "cat-cache")
        base = load_config(ROOT / "data.yaml").remix
        light = {t: {"gain": {"min_db": -3, "max_db": 3, "p": 1.0}, "channel_swap": {"p": 0.5},
                     "polarity": {"p": 0.5}} for t in TARGETS}
        # the gain copies are near-duplicates by design: keep them, so the stream draws from the same 124 stems as
        # the naive baseline (with dedupe on, the pool served 31 of them)
        cfg = base.model_copy(update={"augment": light, "filters": base.filters.model_copy(update={"dedupe": False})})

        def stream(dtype: str, cat: str = "cat") -> RemixStream:
            return RemixStream(work / cat, cfg, seconds=args.seconds, seed=0, epoch_length=n, dtype=dtype,
                               batch_size=args.batch)

        def plain(ds: Dataset) -> DataLoader:
            return DataLoader(ds, batch_size=args.batch, num_workers=args.workers,
                              persistent_workers=args.workers > 0)

        def fast(ds: IndexedStream) -> StreamLoader:
            return StreamLoader(ds, batch_size=args.batch, num_workers=args.workers)

        naive = NaiveSourceFolders(files, seconds=args.seconds, n=n, seed=0)
        for i in range(min(n, 64)):  # warm the page cache
            naive[i]
        print(f"corpus: {sum(len(v) for v in files.values())} stems x {corpus['seconds']} s; {n} mixtures of {args.seconds:g} s per "
              f"variant, batch {args.batch}, {args.workers} workers; CPU ms per mixture, all processes, "
              f"steady state (2nd epoch)")
        print(f"  stem cache: {cache_files} files, {cache_bytes / 1e6:.1f} MB on disk "
              f"({cache_bytes / max(1, sum(len(v) for v in files.values())) / 1e6:.2f} MB per stem)")
        ds32, ds16 = stream("float32"), stream("int16")
        for label, ms in render_breakdown(ds32, min(n, 200)):
            print(f"  renderer, 1 process: {label}: {ms:.2f} ms")
        cached32 = stream("float32", "cat-cache")
        print(f"  renderer, 1 process, stem cache: whole item (plan + render): "
              f"{render_only(cached32, min(n, 200)):.2f} ms")
        for label, kw in [("mono", dict(mono=True)), ("33,075 Hz (soxr per stem)", dict(sample_rate=33075)),
                          ("22,050 Hz (soxr per stem)", dict(sample_rate=22050))]:
            other = RemixStream(work / "cat", cfg, seconds=args.seconds, seed=0, epoch_length=n, **kw)
            print(f"  renderer, 1 process, {label}: {render_only(other, min(n, 100)):.2f} ms")
        for name, loader in [
            ("pipeline only (fixed item), DataLoader default collate, float32", plain(FixedItems(ds32.item(0, 0), n))),
            ("pipeline only (fixed item), DataLoader default collate, int16", plain(FixedItems(ds16.item(0, 0), n))),
            ("pipeline only (fixed item), StreamLoader, float32", fast(FixedStream(ds32, n, "float32"))),
            ("pipeline only (fixed item), StreamLoader, int16", fast(FixedStream(ds32, n, "int16"))),
        ]:
            cpu, wall = measure(loader, n, args.sink_threads)
            print(f"  {name}: {cpu:.2f} ms CPU, {wall:.2f} ms wall")
        results = {}
        for name, loader in [("naive source folders (Open-Unmix style), DataLoader", plain(naive)),
                             ("RemixStream float32, DataLoader default collate", plain(ds32)),
                             ("RemixStream int16, DataLoader default collate", plain(ds16)),
                             ("RemixStream float32, StreamLoader", fast(ds32)),
                             ("RemixStream int16, StreamLoader", fast(ds16)),
                             ("RemixStream int16, DataLoader default collate, stem cache",
                              plain(stream("int16", "cat-cache"))),
                             ("RemixStream float32, StreamLoader, stem cache", fast(stream("float32", "cat-cache"))),
                             ("RemixStream int16, StreamLoader, stem cache", fast(stream("int16", "cat-cache")))]:
            cpu, wall = measure(loader, n, args.sink_threads)
            results[name] = cpu
            print(f"{name}: {cpu:.2f} ms CPU per mixture (all processes), {wall:.2f} ms wall")
        if args.profile:
            print(profile_render(ds32, min(n, 200)))
        naive_ms = results["naive source folders (Open-Unmix style), DataLoader"]
        best = min((k for k in results if k.startswith("RemixStream")), key=results.__getitem__)
        print(f"best stream: {best}: {results[best]:.2f} ms CPU per {args.seconds:g} s 4-stem mixture (goal <= 4)")
        print(f"ratio naive/stream: {naive_ms / results[best]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

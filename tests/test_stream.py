"""Streaming datasets (train.data) on the real fixtures: sharding over workers and ranks, order per (seed, epoch),
exact resume, items equal to the renderer's, shapes and dtypes, GPU pitch/stretch hand-off, MUSDB-layout readers."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from augment.config import load_project
from augment.remix import plan_mixture
from augment.render import render_recipe
from stemdb import audio
from stemdb.errors import ConfigError
from train.data import (
    MixtureFolders,
    MusdbTracks,
    RemixStream,
    StreamLoader,
    device_batch,
    epoch_order,
    worker_positions,
)
from train.gpu_augment import GpuAugment

from .conftest import STEM_MP4, import_or_skip

ROOT = Path(__file__).parent.parent
MUSDB = ROOT / "tests" / "data" / "musdb"
BASE = load_project(ROOT / "data.yaml").remix
LIGHT = {t: {"gain": {"min_db": -3, "max_db": 3, "p": 0.5}, "channel_swap": {"p": 0.5}, "polarity": {"p": 0.5}}
         for t in BASE.targets}
CFG = BASE.model_copy(update={"augment": LIGHT})
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

SEC = 0.5  # short items keep the file fast
N = 10  # epoch length: not a multiple of 4, so rank shares differ in size


def stream(cat: Path, **kw) -> RemixStream:
    args = dict(seconds=SEC, seed=11, epoch_length=N, with_index=True)
    args.update(kw)
    return RemixStream(cat, CFG, **args)


def batches(loader, limit: int | None = None) -> list[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """(indices, mixture, targets) per batch, cloned (StreamLoader buffers are reused)."""
    out = []
    for b in itertools.islice(loader, limit):
        out.append((b[0].tolist(), b[1].clone(), b[2].clone()))
    return out


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x[0] == y[0] and torch.equal(x[1], y[1]) and torch.equal(x[2], y[2])
                                    for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------------------------------------ sharding


@given(n=st.integers(0, 40), start_frac=st.floats(0, 1), run=st.integers(1, 5), workers=st.integers(1, 4))
@settings(max_examples=60, deadline=None)
def test_worker_runs_partition_the_share_and_round_robin_restores_its_order(n: int, start_frac: float, run: int,
                                                                            workers: int) -> None:
    start = int(start_frac * n)
    per_worker = [list(worker_positions(n, start=start, run=run, worker=w, workers=workers)) for w in range(workers)]
    flat = [int(p) for runs in per_worker for r in runs for p in r]
    assert sorted(flat) == list(range(start, n))  # disjoint and complete
    # a DataLoader takes one run from each worker in turn until one has none left: positions start..n-1 in order
    rr: list[int] = []
    for j in itertools.count():
        runs = per_worker[j % workers]
        if j // workers >= len(runs):
            break
        rr += runs[j // workers].tolist()
    assert rr == list(range(start, n))
    assert all(len(r) == run for runs in per_worker for r in runs[:-1])


@pytest.mark.parametrize("world", [1, 2, 4])
@pytest.mark.parametrize("workers", [0, 1, 3])
def test_every_index_exactly_once_per_epoch(fixture_catalog: Path, workers: int, world: int) -> None:
    seen = []
    for rank in range(world):
        ds = stream(fixture_catalog, rank=rank, world_size=world, batch_size=2)
        got = [i for b in DataLoader(ds, batch_size=2, num_workers=workers) for i in b[0].tolist()]
        # the loader delivers the rank's share in order, whatever the number of workers
        assert got == epoch_order(11, 0, N)[rank::world].tolist()
        seen += got
    assert sorted(seen) == list(range(N))


def test_exactly_once_with_default_config_and_any_loader_batch_size(fixture_catalog: Path) -> None:
    seen = []
    for rank in range(2):  # the interface outside checks use: config None, run length 1, loader batch 4
        ds = RemixStream(catalog=fixture_catalog, seconds=SEC, seed=2, epoch_length=N, rank=rank, world_size=2,
                         with_index=True)
        seen += [i for b in DataLoader(ds, batch_size=4, num_workers=3) for i in b[0].tolist()]
    assert sorted(seen) == list(range(N))


def test_streamloader_gives_the_dataloader_batches_for_any_worker_count(fixture_catalog: Path) -> None:
    ref = batches(DataLoader(stream(fixture_catalog, batch_size=3), batch_size=3))
    assert [i for b in ref for i in b[0]] == epoch_order(11, 0, N).tolist()
    for workers in (0, 1, 3):
        got = batches(StreamLoader(stream(fixture_catalog), batch_size=3, num_workers=workers))
        assert same(got, ref), workers
    dropped = StreamLoader(stream(fixture_catalog), batch_size=3, drop_last=True)
    assert len(dropped) == 3 and same(batches(dropped), ref[:3])
    for rank in range(2):  # ranks through the StreamLoader too
        ds = stream(fixture_catalog, rank=rank, world_size=2)
        got = [i for b in batches(StreamLoader(ds, batch_size=2, num_workers=2)) for i in b[0]]
        assert got == epoch_order(11, 0, N)[rank::2].tolist()


def test_epochs_differ_and_epoch_zero_is_the_rendered_set(fixture_catalog: Path) -> None:
    ds = stream(fixture_catalog)
    e0 = [i for i, _m, _t in ds]
    ds.set_epoch(1)
    e1 = [i for i, _m, _t in ds]
    assert sorted(e0) == sorted(e1) == list(range(N)) and e0 != e1
    # content: epoch 0 is plan_mixture(i, seed) (what build_remix renders); epoch 1 draws other mixtures
    r0 = plan_mixture(3, seed=11, pool=ds.pool, cfg=ds.cfg, seconds=SEC)
    assert ds.recipe(3, 0) == r0
    assert ds.recipe(3, 1).stems != r0.stems
    assert not torch.equal(ds.item(3, 0)[2], ds.item(3, 1)[2])


def test_same_seed_and_epoch_give_identical_batches_on_rerun(fixture_catalog: Path) -> None:
    def run(workers: int) -> list:
        ds = stream(fixture_catalog, batch_size=4)
        ds.set_epoch(2)
        return batches(DataLoader(ds, batch_size=4, num_workers=workers))

    a, b = run(2), run(0)
    assert same(a, b)
    other = stream(fixture_catalog, seed=12, batch_size=4)
    other.set_epoch(2)
    assert not same(a, batches(DataLoader(other, batch_size=4)))


# ------------------------------------------------------------------------------------------------ resume


def test_resume_in_process(fixture_catalog: Path) -> None:
    full = batches(DataLoader(stream(fixture_catalog, batch_size=3), batch_size=3))
    ds = stream(fixture_catalog, batch_size=3)
    ds.set_epoch(0)
    head = batches(DataLoader(ds, batch_size=3), limit=2)
    state = ds.state_dict()
    assert state["epoch"] == 0 and state["consumed"] == 6
    fresh = stream(fixture_catalog, batch_size=3)
    fresh.load_state_dict(state)
    tail = batches(DataLoader(fresh, batch_size=3))
    assert same(head + tail, full)
    fresh.set_epoch(0)  # the same epoch keeps the loaded resume point ...
    assert len(fresh) == N - 6
    fresh.set_epoch(1)  # ... a new epoch starts at its beginning
    assert len(fresh) == N and fresh.state_dict()["consumed"] == 0


def test_resume_through_dataloader_workers(fixture_catalog: Path) -> None:
    ds = stream(fixture_catalog, batch_size=2)
    ds.set_epoch(3)
    full = batches(DataLoader(ds, batch_size=2, num_workers=2))
    ds.set_epoch(4)
    ds.set_epoch(3)  # back at the start of epoch 3
    head = batches(DataLoader(ds, batch_size=2, num_workers=2), limit=2)
    # items are drawn in the workers: the loop says what it received
    assert ds.state_dict()["consumed"] == 0
    for b in head:
        ds.count_delivered(len(b[0]))
    state = ds.state_dict()
    assert state == ds.state_dict(consumed=4) and state["consumed"] == 4
    fresh = stream(fixture_catalog, batch_size=2)
    fresh.load_state_dict(state)
    tail = batches(DataLoader(fresh, batch_size=2, num_workers=3))  # another worker count after the restart
    assert same(head + tail, full)


def test_resume_through_streamloader_counts_for_you(fixture_catalog: Path) -> None:
    ds = stream(fixture_catalog, rank=1, world_size=2)
    loader = StreamLoader(ds, batch_size=2, num_workers=2)
    ds.set_epoch(4)
    full = batches(loader)
    head = batches(loader, limit=2)  # abandoned mid-epoch: the workers must not hang
    state = loader.state_dict()
    assert state["consumed"] == 4 and state["rank"] == 1
    assert same(batches(loader), full)  # the same loader again: a whole epoch, nothing stale from the last one
    fresh = stream(fixture_catalog, rank=1, world_size=2)
    fresh.load_state_dict(state)
    tail = batches(StreamLoader(fresh, batch_size=2, num_workers=1))
    assert same(head + tail, full)
    assert [i for b in full for i in b[0]] == epoch_order(11, 4, N)[1::2].tolist()


def test_persistent_workers_follow_set_epoch(fixture_catalog: Path) -> None:
    ds = stream(fixture_catalog, batch_size=2)
    plain = DataLoader(ds, batch_size=2, num_workers=2, persistent_workers=True)
    fast = StreamLoader(ds, batch_size=2, num_workers=2)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        want = epoch_order(11, epoch, N).tolist()
        assert [i for b in plain for i in b[0].tolist()] == want
        assert [i for b in fast for i in b[0].tolist()] == want


def test_endless_stream(fixture_catalog: Path) -> None:
    seen = []
    for rank in range(2):
        ds = stream(fixture_catalog, epoch_length=None, rank=rank, world_size=2, batch_size=2)
        got = [i for b in batches(DataLoader(ds, batch_size=2, num_workers=2), limit=4) for i in b[0]]
        assert got == [rank + 2 * p for p in range(8)]
        seen += got
        ds.load_state_dict(ds.state_dict(consumed=8))
        assert next(iter(ds))[0] == rank + 2 * 8
    assert len(set(seen)) == 16
    with pytest.raises(TypeError):
        len(stream(fixture_catalog, epoch_length=None))


# ------------------------------------------------------------------------------------------------ content


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_items_equal_the_renderer(fixture_catalog: Path, dtype: str) -> None:
    ds = stream(fixture_catalog, dtype=dtype, seconds=1.5)
    ds.set_epoch(1)
    for index, mix, tgt in itertools.islice(ds, 4):
        r = render_recipe(ds.recipe(index, 1), ds.table, ds.cfg)
        assert tgt.dtype == getattr(torch, dtype) and tgt.shape == (4, 2, 66150) and mix.shape == (2, 66150)
        scale = 1.0 if dtype == "float32" else 1.0 / 32768.0
        assert torch.equal(tgt.to(torch.float32) * scale, torch.from_numpy(r.stems))
        assert torch.equal(mix.to(torch.float32) * scale, torch.from_numpy(r.mixture))
        assert torch.equal(mix, tgt.sum(0, dtype=tgt.dtype))  # mixture == sum of stems, exactly


@pytest.mark.parametrize(("mono", "rate"), [(True, None), (False, 33075), (True, 22050)])
def test_shapes_for_mono_and_reduced_rates(fixture_catalog: Path, mono: bool, rate: int | None) -> None:
    ds = stream(fixture_catalog, mono=mono, sample_rate=rate, seconds=1.0)
    sr = rate or 44100
    index, mix, tgt = next(iter(ds))
    c = 1 if mono else 2
    assert ds.sample_rate == sr and ds.targets == ("vocals", "drums", "bass", "other")
    assert mix.shape == (c, sr) and tgt.shape == (4, c, sr) and mix.dtype == tgt.dtype == torch.float32
    assert float(tgt.abs().max()) > 0.01  # real audio, not silence
    r = render_recipe(ds.recipe(index), ds.table, ds.cfg)
    assert r.stems.shape == (4, c, sr) and torch.equal(tgt, torch.from_numpy(r.stems))


def test_gpu_augment_mode_hands_pitch_and_stretch_to_gpu_augment(fixture_catalog: Path) -> None:
    heavy = {t: {**LIGHT[t], "pitch": {"min_semitones": -2, "max_semitones": 2, "p": 1.0},
                 "stretch": {"min_rate": 0.9, "max_rate": 1.2, "p": 1.0}} for t in BASE.targets}
    cfg = BASE.model_copy(update={"augment": heavy})
    ds = RemixStream(fixture_catalog, cfg, seconds=1.0, seed=5, epoch_length=4, gpu_augment=True, dtype="int16")
    assert ds.frames == math.ceil(44100 * 1.2) + 8 and ds.out_frames == 44100
    mix, tgt, aug = ds.item(0, 0)
    recipe = ds.recipe(0, 0)
    assert torch.equal(aug["pitch"], torch.tensor([s.augment["pitch_semitones"] for s in recipe.stems]))
    assert torch.equal(aug["rate"], torch.tensor([s.augment["stretch_rate"] for s in recipe.stems]))
    assert (aug["pitch"] != 0).all() and (aug["rate"] != 1).all()
    # the CPU part is the recipe without pitch/stretch over the longer window
    r = render_recipe(ds.cpu_recipe(recipe), ds.table, ds.cfg)
    assert tgt.shape == (4, 2, ds.frames) and torch.equal(tgt.float() / 32768, torch.from_numpy(r.stems))
    b = next(iter(DataLoader(ds, batch_size=2)))
    out_mix, out_tgt = device_batch(*b, device="cpu", augment=GpuAugment(), out_frames=ds.out_frames)
    assert out_tgt.shape == (2, 4, 2, 44100) and out_mix.shape == (2, 2, 44100) and out_tgt.dtype == torch.float32
    assert torch.allclose(out_mix, out_tgt.sum(1))
    # with identity parameters the GPU path gives exactly the CPU render of the plain stream
    neutral = {t: {**heavy[t], "pitch": {**heavy[t]["pitch"], "p": 0.0}, "stretch": {**heavy[t]["stretch"], "p": 0.0}}
               for t in BASE.targets}
    cfg0 = BASE.model_copy(update={"augment": neutral})
    gpu = RemixStream(fixture_catalog, cfg0, seconds=1.0, seed=5, epoch_length=4, gpu_augment=True)
    cpu = RemixStream(fixture_catalog, cfg0, seconds=1.0, seed=5, epoch_length=4)
    g = next(iter(DataLoader(gpu, batch_size=2)))
    c = next(iter(DataLoader(cpu, batch_size=2)))
    gm, gt = device_batch(*g, device="cpu", augment=GpuAugment(), out_frames=gpu.out_frames)
    assert torch.equal(gt, c[1]) and torch.allclose(gm, c[0], atol=1e-6)
    # a silent target carries the identity, so GpuAugment copies its zeros instead of processing them
    silent = RemixStream(fixture_catalog, cfg.model_copy(update={"silent_prob": {"vocals": 1.0}}), seconds=1.0,
                         seed=5, epoch_length=4, gpu_augment=True)
    _m, t, a = silent.item(1, 0)
    assert silent.recipe(1, 0).stems[0].augment["pitch_semitones"] != 0  # drawn all the same
    assert a["pitch"][0] == 0 and a["rate"][0] == 1 and not t[0].any() and (a["rate"][1:] != 1).all()


def test_streamloader_device_batches_are_float_copies(fixture_catalog: Path) -> None:
    ds = stream(fixture_catalog, dtype="int16", with_index=False)
    loader = StreamLoader(ds, batch_size=2, num_workers=1, device="cpu")
    got = list(loader)  # kept across fetches: must not be overwritten by later batches
    ref = list(DataLoader(stream(fixture_catalog, with_index=False, batch_size=2), batch_size=2))
    assert len(got) == len(ref) == 5
    for (m, t), (rm, rt) in zip(got, ref, strict=True):
        assert m.dtype == torch.float32 and torch.equal(m, rm) and torch.equal(t, rt)


def test_bad_arguments_name_the_key(fixture_catalog: Path) -> None:
    cases = [(dict(dtype="float16"), "dtype"), (dict(rank=1), "rank"), (dict(rank=2, world_size=2), "rank"),
             (dict(seconds=0), "seconds"), (dict(epoch_length=0), "epoch_length"), (dict(sample_rate=100), None)]
    for kw, key in cases:
        with pytest.raises(ConfigError) as err:
            stream(fixture_catalog, **kw)
        if key:
            assert err.value.key == key, kw
    with pytest.raises(ConfigError, match="sample_rate"):
        stream(fixture_catalog, sample_rate=100)
    with pytest.raises(ConfigError, match="PCM_16"):
        RemixStream(fixture_catalog, CFG.model_copy(update={"subtype": "PCM_24"}), dtype="int16")
    ds = stream(fixture_catalog)
    with pytest.raises(ConfigError) as err:
        ds.load_state_dict({**ds.state_dict(), "seed": 12})
    assert err.value.key == "seed"
    with pytest.raises(ConfigError):
        ds.state_dict(consumed=N + 1)
    with pytest.raises(ConfigError):
        StreamLoader(ds, batch_size=2, augment=GpuAugment())


# ------------------------------------------------------------------------------------------------ MUSDB layouts


def test_mixture_folders_crops_are_the_files_windows() -> None:
    ds = MixtureFolders(MUSDB, split="train", seconds=1.0, seed=3, epoch_length=6, with_index=True)
    assert [t.name for t in ds.tracks][:1] == ["Music Delta - Hendrix"] and len(ds.tracks) == 4
    index, mix, tgt = next(iter(ds))
    assert mix.shape == (2, 44100) and tgt.shape == (4, 2, 44100) and tgt.dtype == torch.float32
    track, start = ds.crop(index)
    for s, name in enumerate(ds.targets):
        want, _ = audio.read(track.files[name], start=start, frames=44100)
        assert torch.equal(tgt[s], torch.from_numpy(want))
    want, _ = audio.read(track.files["mixture"], start=start, frames=44100)
    assert torch.equal(mix, torch.from_numpy(want))
    got = [i for b in DataLoader(ds, batch_size=2, num_workers=2) for i in b[0].tolist()]
    assert sorted(got) == list(range(6))
    ds.set_epoch(1)
    assert ds.crop(index, 1) != ds.crop(index, 0) or ds.crop(index + 1, 1) != ds.crop(index + 1, 0)
    i16 = MixtureFolders(MUSDB, split="train", seconds=1.0, seed=3, epoch_length=6, dtype="int16")
    m16, t16 = i16.item(index, 0)
    assert t16.dtype == torch.int16 and torch.equal(t16.float() / 32768, tgt)
    mono = MixtureFolders(MUSDB, split="test", seconds=0.5, mono=True, epoch_length=2, batch_size=2)
    b = next(iter(StreamLoader(mono, batch_size=2)))
    assert b[0].shape == (2, 1, 22050) and b[1].shape == (2, 4, 1, 22050)
    with pytest.raises(ConfigError):
        MixtureFolders(MUSDB, split="nope")


def test_musdb_tracks_full_tracks() -> None:
    ds = MusdbTracks(MUSDB, subsets="train")
    assert len(ds) == 4 and ds.names[0] == "Music Delta - Hendrix"
    mix, tgt, name = ds[2]
    assert name == "Music Delta - Rock"
    assert mix.shape == (2, 176400) and tgt.shape == (4, 2, 176400) and mix.dtype == tgt.dtype == torch.float32
    want, _ = audio.read(MUSDB / "train" / name / "drums.wav")
    assert torch.equal(tgt[1], torch.from_numpy(want))  # targets in vocals, drums, bass, other order
    test = MusdbTracks(MUSDB, subsets="test", mono=True)
    m, t, n = test[0]
    assert n == "The Easton Ellises - Falcon 69" and m.shape[0] == 1 and t.shape[:2] == (4, 1)
    with pytest.raises(ConfigError):
        MusdbTracks(MUSDB, subsets="train", targets=("vocals", "piano"))
    with pytest.raises(IndexError):
        ds[4]
    assert np.isfinite(mix.numpy()).all()
    with pytest.raises(ConfigError, match="no tracks"):  # none of the fixture songs is on MUSDB's validation list
        MusdbTracks(MUSDB, subsets="train", split="valid")
    with pytest.raises(ConfigError, match="needs subsets='train'"):
        MusdbTracks(MUSDB, subsets="test", split="train")
    mp4 = MusdbTracks(STEM_MP4, subsets="test", is_wav=False, targets=("vocals", "accompaniment"))
    m, t, n = mp4[0]
    streams, _ = audio.read_stem_mp4(STEM_MP4 / "test" / f"{n}.stem.mp4")
    assert torch.equal(m, torch.from_numpy(streams[0])) and torch.equal(t[0], torch.from_numpy(streams[4]))
    np.testing.assert_allclose(t[1].numpy(), streams[1] + streams[2] + streams[3], atol=1e-6)


@pytest.mark.ffmpeg
def test_musdb_tracks_reads_what_musdb_reads() -> None:
    """Same tracks, order, splits and values as ``musdb.DB`` (which needs ffmpeg). HQ folders: equal; .stem.mp4:
    equal to 16-bit rounding once our float decode is rounded and clipped as musdb's stempeg path does (the
    fixture's mixture peaks at 1.024 and musdb clips it)."""
    musdb = import_or_skip("musdb")
    names = ("vocals", "drums", "accompaniment", "linear_mixture")
    for kw in ({"subsets": "train"}, {"subsets": ["train", "test"]}, {"subsets": "train", "split": "train"}):
        db, ours = musdb.DB(root=str(MUSDB), is_wav=True, **kw), MusdbTracks(MUSDB, targets=names, **kw)
        assert [t.name for t in db.tracks] == ours.names
        for i, track in enumerate(db.tracks):
            m, tgt, _ = ours[i]
            np.testing.assert_array_equal(m.numpy(), track.audio.T.astype(np.float32))
            for k, name in enumerate(names):
                np.testing.assert_allclose(tgt[k].numpy(), track.targets[name].audio.T, atol=1e-6)
    track = musdb.DB(root=str(STEM_MP4), is_wav=False, subsets="test").tracks[0]
    m, tgt, name = MusdbTracks(STEM_MP4, subsets="test", is_wav=False, targets=("vocals",))[0]
    assert name == track.name and m.shape == track.audio.T.shape
    rounded = np.clip(np.round(m.numpy() * 32768), -32768, 32767) / 32768
    assert np.max(np.abs(rounded - track.audio.T)) <= 1 / 32768
    assert np.max(np.abs(m.numpy() - track.audio.T)) > 0.02  # what the rounding and clipping took away

"""The renderer's compiled linear path and the int16 stem cache give the numpy path's bits exactly (issue 17)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from augment.config import load_project
from augment.pool import build_pool
from augment.remix import plan_block
from augment.render import StemTable, render_into, render_recipe
from stemdb import audio, stem_cache

ROOT = Path(__file__).parent.parent
CFG = load_project(ROOT / "data.yaml").remix
LINEAR = {t: {"gain": {"min_db": -6, "max_db": 6, "p": 0.7}, "channel_swap": {"p": 0.5}, "polarity": {"p": 0.5}}
          for t in CFG.targets}
FAST = CFG.model_copy(update={"augment": LINEAR})

pytest.importorskip("numba")


@pytest.fixture(scope="module")
def recipes(fixture_catalog: Path) -> list:
    pool = build_pool(fixture_catalog, FAST)
    rs = plan_block(pool, FAST, seed=5, indices=range(40), seconds=2.0).recipes()
    # loud levels too, so the common clip scale is exercised on both paths
    loud = [dataclasses.replace(r, stems=tuple(dataclasses.replace(s, level_db=s.level_db + 18.0) for s in r.stems))
            for r in rs[:8]]
    return rs + loud


def _both(recipe, table: StemTable, cfg, dtype: type) -> tuple:  # noqa: ANN001
    shape = (len(recipe.stems), recipe.channels, recipe.frames)
    out = []
    for backend in ("numpy", "kernel"):
        stems, mix = np.full(shape, 7, dtype), np.full(shape[1:], 7, dtype)
        g = render_into(recipe, table, cfg, stems, mix, backend=backend)
        out.append((stems, mix, g))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_kernel_equals_numpy_path_bit_for_bit(fixture_catalog: Path, recipes: list, dtype: type) -> None:
    table = StemTable.from_catalog(fixture_catalog)
    linear = scaled = 0
    for r in recipes:
        try:
            (s0, m0, g0), (s1, m1, g1) = _both(r, table, FAST, dtype)
        except ValueError as exc:  # a stem that is not 16-bit PCM at the output rate: no kernel path
            assert "no kernel path" in str(exc)
            continue
        linear += 1
        scaled += g0 != 0.0
        assert s0.tobytes() == s1.tobytes(), r.mix_id
        assert m0.tobytes() == m1.tobytes(), r.mix_id
        assert g0 == g1
        if dtype == np.int16:  # the sum of the int16 stems is the mixture (before any clip at full scale)
            total = s1.astype(np.int32).sum(0)
            assert np.array_equal(np.clip(total, -32768, 32767), m1.astype(np.int32))
    assert linear >= 20, f"only {linear} recipes took the kernel path"
    assert scaled >= 1, "no recipe exercised the clip scale"


def _edge_cases(recipes: list, table: StemTable) -> list:
    """Variants of real recipes that reach the kernel's rare branches: near-silent levels (most samples round to
    +-0.0, so the float32 bytes show the sign of every zero), windows that run past the stem's end without a loop
    (zero fill, with a polarity flip so a scaled zero would be -0.0), and silent targets."""
    out = []
    for r in recipes[:10]:
        out.append(("quiet", dataclasses.replace(r, stems=tuple(dataclasses.replace(s, level_db=s.level_db - 60.0)
                                                                for s in r.stems))))
        short = []
        for s in r.stems:
            if s.stem_id is not None:
                src = table[s.stem_id]
                end = max(0.0, src.frames / src.sample_rate - r.duration_s / 3)
                s = dataclasses.replace(s, offset_s=end, loop=False, augment={**s.augment, "polarity": -1})
            short.append(s)
        out.append(("short", dataclasses.replace(r, stems=tuple(short))))
        out.append(("silent", dataclasses.replace(r, stems=tuple(dataclasses.replace(s, stem_id=None) if k % 2 else s
                                                                for k, s in enumerate(r.stems)))))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_kernel_equals_numpy_path_on_edge_cases(fixture_catalog: Path, recipes: list, dtype: type) -> None:
    table = StemTable.from_catalog(fixture_catalog)
    linear = zeros = short = 0
    for kind, r in _edge_cases(recipes, table):
        try:
            (s0, m0, g0), (s1, m1, g1) = _both(r, table, FAST, dtype)
        except ValueError as exc:
            assert "no kernel path" in str(exc)
            continue
        linear += 1
        assert s0.tobytes() == s1.tobytes(), r.mix_id
        assert m0.tobytes() == m1.tobytes(), r.mix_id
        assert g0 == g1
        zeros += int(np.signbit(m0[m0 == 0]).sum())
        if kind == "short":  # a stem with audio at the start and the zero fill at the end
            short += int(any(s[:, :10].any() and not s[:, -10:].any() for s in s0))
    assert linear >= 20
    if dtype == np.float32:
        assert zeros > 0, "no negative zero in any mixture: the sign test did not happen"
    assert short > 0, "no window ran past its stem's end"


def test_mono_output_averages_like_the_numpy_path(fixture_catalog: Path) -> None:
    cfg = FAST.model_copy(update={"channels": 1})
    pool = build_pool(fixture_catalog, cfg)
    table = StemTable.from_catalog(fixture_catalog)
    done = 0
    for r in plan_block(pool, cfg, seed=9, indices=range(20), seconds=1.0).recipes():
        try:
            (s0, m0, _), (s1, m1, _) = _both(r, table, cfg, np.float32)
        except ValueError:
            continue
        done += 1
        assert s0.tobytes() == s1.tobytes() and m0.tobytes() == m1.tobytes()
    assert done >= 10


def test_stem_cache_renders_the_same_bits_and_reports_its_size(fixture_catalog: Path, tmp_path: Path,
                                                               recipes: list) -> None:
    cat = tmp_path / "cat"
    shutil.copytree(fixture_catalog, cat)
    written = stem_cache.fill(cat)
    files, size = stem_cache.cache_size(cat)
    assert written == files > 10 and size > 0
    assert stem_cache.fill(cat) == 0  # a rerun writes nothing
    table = StemTable.from_catalog(cat)
    plain = StemTable.from_catalog(fixture_catalog)
    assert sum(1 for s in table.sources.values() if s.cache) >= files  # every cached stem is read from its map
    for r in recipes[:20]:
        a = render_recipe(r, plain, FAST)
        b = render_recipe(r, table, FAST)
        assert a.stems.tobytes() == b.stems.tobytes() and a.mixture.tobytes() == b.mixture.tobytes(), r.mix_id
    # the cache holds exactly the file's samples
    sid = next(iter(stem_cache.cached_ids(cat)))
    src = table[sid]
    want, _ = audio.read(src.path, dtype="int16", channels_first=False,
                         stream=None if src.stream < 0 else src.stream)
    assert np.array_equal(stem_cache.open_pcm16(src.cache), want)


def test_ingest_with_cache_int16_writes_every_16_bit_stem(tmp_path: Path) -> None:
    from stemdb.catalog import Catalog
    from stemdb.config import IngestConfig, SourceConfig, StemsLayout
    from stemdb.ingest import ingest_sources

    from .conftest import STEMS

    kinds = {k: k for k in ("vocals", "drums", "bass", "keys", "other")}
    ingest_sources([SourceConfig(name="s", root=STEMS, layout=StemsLayout(kinds=kinds))], tmp_path / "cat",
                   cfg=IngestConfig(tempo=False, workers=1, cache="int16"))
    df = Catalog.open(tmp_path / "cat").stems(columns=["stem_id", "subtype"])
    want = set(df.loc[df["subtype"] == "PCM_16", "stem_id"])
    assert want and stem_cache.cached_ids(tmp_path / "cat") == want  # every 16-bit stem, nothing else


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_threads_of_one_process_render_the_serial_bits(fixture_catalog: Path, recipes: list, dtype: type) -> None:
    """The kernel releases the GIL and a thread-pool build renders in several threads: each thread has its own
    block buffers, so concurrent renders give exactly the serial ones."""
    from concurrent.futures import ThreadPoolExecutor

    table = StemTable.from_catalog(fixture_catalog)

    def one(r) -> bytes:  # noqa: ANN001
        shape = (len(r.stems), r.channels, r.frames)
        stems, mix = np.empty(shape, dtype), np.empty(shape[1:], dtype)
        render_into(r, table, FAST, stems, mix)
        return stems.tobytes() + mix.tobytes()

    want = [one(r) for r in recipes]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            assert list(pool.map(one, recipes)) == want


def _numpy_reference(srcs: list, scales: list, swaps: list, c_out: int, n: int, dtype: type) -> tuple:
    """The numpy path's steps (``render._render_linear`` per stem, then ``_render_numpy``'s clip scale, grid and
    sum, then ``render_into``'s int16 conversion) on given int16 windows."""
    from augment.render import CLIP_LIMIT, _to_grid, mix_stems
    from stemdb.shaping import channel_source

    stems = np.zeros((len(srcs), c_out, n), np.float32)
    for k, a in enumerate(srcs):
        m, factor, sources = a.shape[0], np.float32(scales[k] / 32768.0), channel_source(a.shape[1], c_out)
        if sources is None:
            acc = stems[k, 0, :m]
            np.add(a[:, 0], a[:, 1], out=acc, dtype=np.float32, casting="unsafe")
            for c in range(2, a.shape[1]):
                np.add(acc, a[:, c], out=acc, dtype=np.float32, casting="unsafe")
            acc *= np.float32(factor / a.shape[1])
            continue
        for c in range(c_out):
            row = c_out - 1 - c if swaps[k] and c_out == 2 else c
            np.multiply(a[:, sources[c]], factor, out=stems[k, row, :m], dtype=np.float32, casting="unsafe")
    peaks = [max(float(s.max(initial=0.0)), -float(s.min(initial=0.0))) for s in stems]
    peak = max(peaks)
    if sum(peaks) > CLIP_LIMIT:
        raw = mix_stems(stems)
        peak = max(peak, float(raw.max()), -float(raw.min()))
    if peak > CLIP_LIMIT:
        stems *= np.float32(CLIP_LIMIT / peak)
    for row in stems.reshape(-1, n):
        _to_grid(row, "PCM_16")
    mix = mix_stems(stems)
    if dtype == np.int16:
        return (stems * np.float32(32768.0)).astype(np.int16), \
            np.clip(mix * np.float32(32768.0), -32768, 32767).astype(np.int16)
    return stems, mix


@pytest.mark.parametrize("c_out", [1, 2])
def test_kernel_on_every_channel_layout_equals_the_numpy_steps(c_out: int) -> None:
    """Synthetic windows the fixtures lack: 1, 2, 3 and 6 channels, windows shorter than the mixture or empty,
    levels from -80 to +20 dB of either sign (so zeros of both signs and the clip scale), swaps."""
    from augment.render import CLIP_LIMIT
    from augment.render_kernels import MEAN, render_linear
    from stemdb.shaping import channel_source

    rng = np.random.default_rng(c_out)
    for _ in range(40):
        n = int(rng.integers(1, 6000))
        srcs, scales, swaps = [], [], []
        for _k in range(4):
            a = (rng.standard_normal((n, int(rng.choice([1, 2, 3, 6])))) * rng.choice([3, 300, 20000]))
            a = a.clip(-32768, 32767).astype(np.int16)[: int(rng.choice([n, rng.integers(0, n + 1)]))]
            a[rng.random(a.shape) < 0.2] = 0
            a.flags.writeable = False
            srcs.append(a)
            scales.append(float(rng.choice([-1.0, 1.0]) * 10 ** rng.uniform(-4, 1)))
            swaps.append(bool(rng.random() < 0.5))
        factors, chan = np.zeros(4, np.float32), np.zeros((4, c_out), np.int64)
        for k, a in enumerate(srcs):  # as render._linear_inputs builds them
            f, sources = np.float32(scales[k] / 32768.0), channel_source(a.shape[1], c_out)
            if sources is None:
                factors[k], chan[k, :] = np.float32(f / a.shape[1]), MEAN
                continue
            factors[k] = f
            for c in range(c_out):
                chan[k, c_out - 1 - c if swaps[k] and c_out == 2 else c] = sources[c]
        lengths = np.array([a.shape[0] for a in srcs], np.int64)
        for dtype in (np.float32, np.int16):
            stems, mix = np.full((4, c_out, n), 7, dtype), np.full((c_out, n), 7, dtype)
            render_linear(tuple(srcs), lengths, factors, chan, stems, mix, CLIP_LIMIT)
            want_stems, want_mix = _numpy_reference(srcs, scales, swaps, c_out, n, dtype)
            assert stems.tobytes() == want_stems.tobytes() and mix.tobytes() == want_mix.tobytes()

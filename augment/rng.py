"""Counter-based random numbers for the planner: uniforms that are a pure function of (seed, index, column).

The planner needs, for mixture ``i`` of a set seeded ``seed``, a fixed row of random numbers that depends on
``(seed, i)`` alone, so that any worker count, chunking or order gives the same mixture; and it needs them for
thousands of indices at once (a block of recipes, a batch of a training stream) without building one generator per
index (a ``SeedSequence`` plus a ``Generator`` costs about 30 us each, 15 % of the whole planning budget).

This is Philox4x64-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011; the bit generator
numpy ships as :class:`numpy.random.Philox`) evaluated on many counters at once with numpy: the key is derived from
the seed once (``SeedSequence(seed).generate_state(2, uint64)``), the counter of column block ``c`` of index ``i``
is ``(c, i, TAG, 0)``, and each counter gives four 64-bit words, made into doubles in [0, 1) exactly as numpy's
``Generator.random`` does (``(x >> 11) * 2**-53``). The output equals numpy's own Philox for the same key and counter
(``tests/test_plan.py`` checks it bit for bit); done here because one vectorised call over 1,024 indices is about
20x cheaper than a numpy generator per index (docs/benchmarks.md "Planning").
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["TAG", "philox4x64", "seed_key", "uniforms"]

_M0 = np.uint64(0xD2E7470EE14C6C93)
_M1 = np.uint64(0xCA5A826395121157)
_W0 = np.uint64(0x9E3779B97F4A7C15)
_W1 = np.uint64(0xBB67AE8584CAA73B)
_LO32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_S11 = np.uint64(11)
#: Third counter word of the planner's draws ("remix"), so other users of the same key draw other numbers.
TAG = 0x72656D6978


@lru_cache(maxsize=256)
def _key_words(seed: int) -> tuple[int, int]:
    k = np.random.SeedSequence(int(seed)).generate_state(2, np.uint64)
    return int(k[0]), int(k[1])


def seed_key(seed: int) -> np.ndarray:
    """The Philox key of ``seed`` (any int >= 0): two uint64 words from numpy's ``SeedSequence``."""
    if isinstance(seed, bool) or int(seed) < 0:
        raise ValueError(f"seed={seed!r} must be an int >= 0")
    return np.array(_key_words(int(seed)), dtype=np.uint64)


def _mulhilo(m: np.uint64, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """High and low 64-bit words of the 128-bit product ``m * x`` (elementwise, uint64)."""
    m0, m1 = m & _LO32, m >> _S32
    x0, x1 = x & _LO32, x >> _S32
    p00, p01, p10 = x0 * m0, x0 * m1, x1 * m0
    mid = (p00 >> _S32) + (p01 & _LO32) + (p10 & _LO32)
    hi = x1 * m1 + (p01 >> _S32) + (p10 >> _S32) + (mid >> _S32)
    return hi, x * m


def philox4x64(counter: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Philox4x64-10 of ``counter`` ``(n, 4)`` uint64 under ``key`` (2 uint64): ``(n, 4)`` uint64 words."""
    c0, c1, c2, c3 = (np.array(counter[:, j], dtype=np.uint64) for j in range(4))
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    with np.errstate(over="ignore"):
        for r in range(10):
            if r:
                k0, k1 = k0 + _W0, k1 + _W1
            hi0, lo0 = _mulhilo(_M0, c0)
            hi1, lo1 = _mulhilo(_M1, c2)
            c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return np.stack([c0, c1, c2, c3], axis=1)


def uniforms(seed: int, indices: np.ndarray, columns: int) -> np.ndarray:
    """``(len(indices), columns)`` doubles in [0, 1): row ``r`` depends on ``(seed, indices[r])`` alone.

    Column ``j`` of index ``i`` is word ``j % 4`` of Philox4x64-10 at counter ``(j // 4, i, TAG, 0)``, so asking for
    more columns never changes the first ones.
    """
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size and int(idx.min()) < 0:
        raise ValueError("indices must be >= 0")
    blocks = -(-int(columns) // 4)
    n = idx.size
    ctr = np.zeros((n * blocks, 4), dtype=np.uint64)
    ctr[:, 0] = np.tile(np.arange(blocks, dtype=np.uint64), n)
    ctr[:, 1] = np.repeat(idx.astype(np.uint64), blocks)
    ctr[:, 2] = np.uint64(TAG)
    words = philox4x64(ctr, seed_key(seed)).reshape(n, blocks * 4)[:, :columns]
    return (words >> _S11).astype(np.float64) * (1.0 / 9007199254740992.0)

"""Does the mixture length fit the catalogue? The padding a set of planned recipes will carry, before rendering.

With ``short: pad`` a stem shorter than its window is zero-padded at the end, so a mixture length longer than most
stems turns most of every mixture into silence. :func:`fill_check` measures it on the planned recipes (each stem's
duration, window offset and stretch rate; a looped window fills), and :meth:`FillCheck.warning` says it in one line
when most of the candidate stems are shorter than the mixture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from augment.pool import StemPool
from augment.recipe import Recipe, StemPlan

#: Warn when more than this share of the candidate stems (all targets) is shorter than the mixture.
MOST = 0.5


@dataclass(frozen=True)
class FillCheck:
    """How well stems of the pool fill mixtures of ``seconds``.

    ``short_share``: per target, the share of candidate stems shorter than ``seconds`` (by count);
    ``longest_s``: per target, the longest candidate stem (s); ``padding_share``: per target, the mean share of a
    mixture where its drawn stem has run out (padding; silent targets left out); ``silent_share``: the mean share of
    a mixture where no target plays (0..1, from the planned recipes); ``short_overall``: the share of all candidate
    stems shorter than ``seconds``.
    """

    seconds: float
    short: str
    short_overall: float
    short_share: dict[str, float]
    longest_s: dict[str, float]
    padding_share: dict[str, float]
    silent_share: float

    def warning(self) -> str | None:
        """One line when most candidate stems are shorter than the mixture and short windows are padded, else None."""
        if self.short != "pad" or self.short_overall <= MOST:
            return None
        longest = max(self.longest_s.values(), default=0.0)
        per = ", ".join(f"{t} {100 * v:.0f}%" for t, v in self.short_share.items())
        return (f"seconds={self.seconds:g} is longer than {100 * self.short_overall:.0f}% of the catalogue's "
                f"candidate stems ({per}; the longest is {longest:.1f} s): about {100 * self.silent_share:.0f}% of "
                "the mixtures' audio will be silence (zero padding). Use a shorter --seconds or remix.short: loop.")


def _covered(plan: StemPlan, durations: dict[str, float], seconds: float) -> float:
    """Share (0..1) of the mixture the stem of ``plan`` fills: its audio after the window offset, at its rate."""
    if plan.stem_id is None:
        return 0.0
    if plan.loop:
        return 1.0
    span = seconds * plan.stretch_rate
    left = durations.get(plan.stem_id, span + plan.offset_s) - plan.offset_s
    return float(np.clip(left / span, 0.0, 1.0)) if span > 0 else 1.0


def fill_check(pool: StemPool, recipes: Sequence[Recipe], *, short: str = "pad") -> FillCheck:
    """Measure how the planned ``recipes`` (all of one length) fill their windows from ``pool``'s stems."""
    seconds = float(recipes[0].duration_s) if recipes else 0.0
    durations = {r.stem_id: r.duration_s for p in pool.pools.values() for r in p.rows}
    short_share, longest = {}, {}
    n_short = n_all = 0
    for t, p in pool.pools.items():
        d = p.durations
        short_share[t] = float(np.mean(d < seconds)) if d.size else 0.0
        longest[t] = float(d.max()) if d.size else 0.0
        n_short += int(np.sum(d < seconds))
        n_all += int(d.size)
    padding: dict[str, list[float]] = {t: [] for t in pool.targets}
    silent = []
    for r in recipes:
        cov = [_covered(s, durations, seconds) for s in r.stems]
        silent.append(1.0 - max(cov, default=0.0))
        for s, c in zip(r.stems, cov, strict=True):
            if s.stem_id is not None:
                padding.setdefault(s.target, []).append(1.0 - c)
    return FillCheck(seconds=seconds, short=short, short_overall=n_short / n_all if n_all else 0.0,
                     short_share=short_share, longest_s=longest,
                     padding_share={t: float(np.mean(v)) if v else 0.0 for t, v in padding.items()},
                     silent_share=float(np.mean(silent)) if silent else 0.0)


__all__ = ["MOST", "FillCheck", "fill_check"]

"""The run log: ``<out>/train.csv`` (step, epoch, loss, lr, elapsed seconds, validation SDR / SI-SDR overall and
per stem), ``<out>/train.png`` (loss and SDR curves, matplotlib Agg), both written atomically, and
:class:`TrainResult`, the summary of one :meth:`train.trainer.Trainer.fit` call."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CSV_NAME = "train.csv"
PNG_NAME = "train.png"
RUN_JSON = "run.json"


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did. ``loss``: the last logged loss; ``valid``: the last validation metrics;
    ``steps_run``: optimizer steps in this call; rates are over this call's training time (validation and
    checkpoint writing excluded); ``history``: the rows logged in this call."""

    out: Path
    step: int
    epoch: int
    loss: float
    valid: dict[str, float]
    checkpoint: Path | None
    csv: Path
    png: Path | None
    steps_run: int
    train_seconds: float
    audio_seconds: float
    resumed_from: int | None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def steps_per_s(self) -> float:
        return self.steps_run / self.train_seconds if self.train_seconds > 0 else math.nan

    @property
    def audio_seconds_per_s(self) -> float:
        """Seconds of mixture audio trained on per second, all ranks together."""
        return self.audio_seconds / self.train_seconds if self.train_seconds > 0 else math.nan

    def line(self) -> str:
        v = self.valid.get("valid_sdr", math.nan)
        return (f"trained to step {self.step} ({self.steps_run} steps, {self.steps_per_s:.2f} steps/s, "
                f"{self.audio_seconds_per_s:.1f} audio-s/s), loss {self.loss:.4g}, valid SDR {v:.2f} dB; "
                f"checkpoint {self.checkpoint}")



def csv_columns(stems: Sequence[str]) -> list[str]:
    """The columns of ``train.csv``."""
    return ["step", "epoch", "loss", "lr", "elapsed_s", "valid_sdr", "valid_si_sdr", *[f"sdr_{s}" for s in stems]]


class CsvLog:
    """``train.csv``: one row per logged step; :meth:`truncate` drops rows after a resumed checkpoint's step."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path, self.columns = Path(path), list(columns)

    def truncate(self, after_step: int) -> None:
        """Keep the header and the rows with ``step <= after_step`` (rewritten atomically)."""
        rows = [r for r in read_csv(self.path) if int(r["step"]) <= after_step] if self.path.is_file() else []
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.path)

    def append(self, row: Mapping[str, Any]) -> None:
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as fh:
            w = csv.DictWriter(fh, self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: _fmt(v) for k, v in row.items()})


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a ``train.csv`` as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def plot_history(csv_path: str | Path, png_path: str | Path, *, title: str | None = None) -> Path:
    """Draw the loss curve and the validation SDR / SI-SDR curves of a ``train.csv`` into a PNG (Agg, atomic).

    Returns:
        ``png_path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = read_csv(csv_path)

    def series(col: str) -> tuple[list[int], list[float]]:
        pts = [(int(r["step"]), float(r[col])) for r in rows if r.get(col) not in (None, "")]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_sdr = fig.subplots(1, 2)
    x, y = series("loss")
    ax_loss.plot(x, y, color="tab:blue", lw=1)
    if y and min(y) > 0:
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
    ax_loss.grid(alpha=0.3)
    stem_cols = [c for c in (rows[0].keys() if rows else []) if c.startswith("sdr_")]
    for col in stem_cols:
        x, y = series(col)
        if x:
            ax_sdr.plot(x, y, lw=0.8, alpha=0.6, marker=".", label=col[4:])
    for col, style in (("valid_sdr", "k-"), ("valid_si_sdr", "k--")):
        x, y = series(col)
        if x:
            ax_sdr.plot(x, y, style, lw=1.8, marker="o", ms=3, label="SDR" if col == "valid_sdr" else "SI-SDR")
    ax_sdr.set(xlabel="step", ylabel="dB", title="validation SDR")
    ax_sdr.grid(alpha=0.3)
    if ax_sdr.lines:
        ax_sdr.legend(fontsize=7, loc="best")
    else:
        ax_sdr.text(0.5, 0.5, "no validation", ha="center", va="center", transform=ax_sdr.transAxes)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png = Path(png_path)
    tmp = png.with_name(f".{png.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, png)
    return png


def pace(done: int, train_s: float, left: int) -> str:
    """``", R steps/s, ETA M:SS"`` for a log line: ``done`` steps in ``train_s`` seconds of training (validation and
    checkpoints not counted), ``left`` steps to go; empty before the first timed step."""
    if train_s <= 0 or done <= 0:
        return ""
    rate = done / train_s
    eta = int(round(max(left, 0) / rate))
    return f", {rate:.3g} steps/s, ETA {eta // 60}:{eta % 60:02d}"


__all__ = ["CSV_NAME", "PNG_NAME", "RUN_JSON", "CsvLog", "TrainResult", "csv_columns", "pace", "plot_history",
           "read_csv"]

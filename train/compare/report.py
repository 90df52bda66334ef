"""The comparison's ``report.html``: one self-contained page in the dataset reports' style (:mod:`stemdb.report.html`:
plots as embedded PNG, the vocals excerpts as embedded Ogg Vorbis), built from ``results.json``'s numbers."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stemdb import audio
from stemdb.report.html import (
    PALETTE,
    Audio,
    Page,
    Section,
    Table,
    audio_uri,
    fmt,
    new_figure,
    render_html,
    to_plot,
    write_text_atomic,
)
from train.compare.runner import ESTIMATES, Comparison
from train.evaluate import MIXTURE, ReferenceTrack, find_tracks

logger = logging.getLogger(__name__)

BASELINE_NAMES = {"mixture_n": "mixture / N (no model)", "mixture": "mixture (no model)"}
METRIC_NAMES = {"SDR": "SDR", "SIR": "SIR (residue of other stems)", "level_error": "level error"}


def compare_report(results: Mapping[str, Any], comp: Comparison, out_html: Path) -> Path:
    """Write the page for ``results`` (the dict :func:`train.compare.finish_comparison` builds); returns its path."""
    f = results["facts"]
    page = Page(title="stemdb compare-datasets report", subtitle=f"{comp.out} · config {results.get('config')}",
                headline=[("variants", str(len(results["variants"]))), ("seeds", str(len(f["seeds"]))),
                          ("held-out songs", f"{len(f['test_tracks'])} ({f['test_minutes']:.1f} min)"),
                          ("budget per run", f["budget_text"]), ("device", f["device_name"])],
                sections=[_budget(results), *_scores(results), _vs_real(results), _curves(results, comp),
                          _listen(results, comp), _cost(results)],
                notices=_notices(results), generated_at=results.get("created_at", ""))
    return write_text_atomic(render_html(page), Path(out_html))


def _notices(r: Mapping[str, Any]) -> list[str]:
    f = r["facts"]
    opts = ", ".join(f"{k}={v}" for k, v in f["model_options"].items()) or "defaults"
    valid = (f"validation on {len(f['validation'].get('tracks') or []) or 'the first'} track(s) of "
             f"{f['validation']['root']} every {f['validation']['every']} steps" if f["validation"] else "no validation")
    notes = [f"Equal budgets: every run trained model {f['model']} ({opts}) for {f['budget_text']} on "
             f"{f['device_name']} ({f['device']}, {f['precision']}), batch {f['batch_size']} x "
             f"{f['crop_seconds']:g} s, accumulate {f['accumulate']}, lr {f['lr']:g}, loss {f['loss']}, seeds "
             f"{', '.join(map(str, f['seeds']))}, {valid}. Scored on {len(f['test_tracks'])} held-out songs "
             f"({', '.join(f['test_tracks'])}) that no run trained on."]
    if f["budget"].get("steps") is not None and not f["equal_steps"]:
        notes.append("Runs did NOT reach the same step count: " + ", ".join(
            f"{k} {v}" for k, v in f["steps_per_run"].items()))
    if len(f["seeds"]) < 3:
        notes.append(f"Only {len(f['seeds'])} seed(s): a verdict needs the sign to hold in every seed, and with so "
                     "few seeds that says little. This page is a smoke-size run, not a quality result.")
    if not r["vs_real"]:
        notes.append("The variant 'real' was not run: no difference to it can be shown.")
    return notes


def _budget(r: Mapping[str, Any]) -> Section:
    f = r["facts"]
    rows = [[k, f["steps_per_run"][k], f"{f['train_seconds_per_run'][k]:.1f}"] for k in f["steps_per_run"]]
    vrows = [[name, v["description"] or v.get("base") or "",
              " then ".join(f"{p['remix_mode']}/{p['levels']}{'/tempo' if p['tempo'] else ''}" for p in v["phases"])]
             for name, v in r["variants"].items()]
    return Section("Equal budgets", "What every run shares is stated at the top of the page; here what each run "
                   "reached (optimizer steps, seconds of training, pretrain phases included) and what each variant "
                   "draws.", [Table("Runs", ["run", "optimizer steps", "training seconds"], rows),
                              Table("Variants", ["variant", "what", "remix mode / levels"], vrows)])


def _range(x: Sequence[float] | None) -> str:
    return "—" if not x else f"{x[0]:+.2f} … {x[1]:+.2f}"


def _scores(r: Mapping[str, Any]) -> list[Section]:
    stems, rows_of = r["stems"], list(r["table"])
    cols = ["", *[f"{s} {c}" for s in stems for c in ("median", "seeds", "songs")]]
    tables = []
    for metric, label in METRIC_NAMES.items():
        rows = [[BASELINE_NAMES.get(name, name), *[c for s in stems for c in (
            fmt(r["table"][name][s][metric]["median"]), _range(r["table"][name][s][metric]["seeds"]),
            _range(r["table"][name][s][metric]["songs"]))]] for name in rows_of]
        tables.append(Table(f"{label} (dB): median over seeds and songs; range of per-seed and per-song medians",
                            cols, rows))
    imp = []
    for base in ("mixture_n", "mixture"):
        rows = [[v, *[c for s in stems for c in (fmt(r["improvement"][base][v][s]["SDR"]["median"]),
                                                  _range(r["improvement"][base][v][s]["SDR"]["seeds"]))]]
                for v in r["improvement"][base]]
        imp.append(Table(f"SDR improvement over {BASELINE_NAMES[base]} (dB, paired per song)",
                         ["", *[f"{s} {c}" for s in stems for c in ("median", "seeds")]], rows))
    first = Section("Scores", "BSSEval v4 (museval, 1 s windows, median per song) on the held-out songs. Both "
                    "baselines are in every table: the unprocessed mixture, and the mixture divided by the number "
                    "of stems. SDR punishes scale, so the unprocessed mixture is a weak baseline; improvements are "
                    "given over mixture / N first. Level error: integrated loudness (BS.1770) of the estimate "
                    "minus the reference's (60 % of the amplitude is -4.4 dB).", tables, [_sdr_plot(r)])
    return [first, Section("Improvement over the baselines", "Per song, the variant's SDR minus the baseline's on "
                           "the same song; median over seeds and songs, and the range of per-seed medians.", imp)]


def _sdr_plot(r: Mapping[str, Any]) -> Any:
    stems, variants = r["stems"], list(r["table"])
    fig, ax = new_figure(10, 3.8)
    width = 0.8 / max(len(variants), 1)
    for i, v in enumerate(variants):
        x = np.arange(len(stems)) + (i - (len(variants) - 1) / 2) * width
        med = [r["table"][v][s]["SDR"]["median"] for s in stems]
        lo = [r["table"][v][s]["SDR"]["seeds"] or r["table"][v][s]["SDR"]["songs"] for s in stems]
        y = np.array([m if m is not None else np.nan for m in med], dtype=float)
        err = np.array([[m - q[0], q[1] - m] if q and m is not None else [0, 0] for m, q in zip(med, lo,
                                                                                              strict=True)]).T
        ax.errorbar(x, y, yerr=err, fmt="o", ms=6, capsize=3, color=PALETTE[i % len(PALETTE)],
                    label=BASELINE_NAMES.get(v, v))
    ax.set_xticks(np.arange(len(stems)), stems)
    ax.set_ylabel("SDR (dB)")
    ax.set_title("Median SDR per stem; bars: range of per-seed medians (baselines: of per-song values)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(len(variants), 4))
    return to_plot(fig, "median SDR per stem and variant with seed spread")


def _vs_real(r: Mapping[str, Any]) -> Section:
    stems, rows = r["stems"], []
    for v, per in r["vs_real"].items():
        for m in ("SDR", "SIR", "level_error"):
            rows.append([v, METRIC_NAMES[m], *[per[s][m]["verdict"] for s in stems]])
    text = ("Each variant minus 'real', paired by seed and song (level error: the distance from 0 dB, lower is "
            "better). 'better/worse by x dB in n of n seeds' only when every seed agrees in sign; otherwise "
            "'within seed spread'.")
    return Section("Difference to real", text, [Table("Verdicts", ["variant", "metric", *stems], rows)] if rows
                   else [])


def _curves(r: Mapping[str, Any], comp: Comparison) -> Section:
    from train.runlog import read_csv

    fig, (a1, a2) = new_figure(11, 3.8, ncols=2)
    for i, variant in enumerate(r["variants"]):
        color = PALETTE[i % len(PALETTE)]
        for j, spec in enumerate(s for s in comp.specs if s.variant == variant):
            offset, xs, loss, vx, vs = 0, [], [], [], []
            for phase in spec.phases:
                rows = read_csv(comp.run_dir(phase.folder) / "train.csv")
                for row in rows:
                    step = offset + int(row["step"])
                    if row.get("loss"):
                        xs.append(step)
                        loss.append(float(row["loss"]))
                    if row.get("valid_sdr"):
                        vx.append(step)
                        vs.append(float(row["valid_sdr"]))
                offset += int(rows[-1]["step"]) if rows else 0
            a1.plot(xs, loss, color=color, lw=1.2, alpha=0.8, label=variant if j == 0 else None)
            if vs:
                a2.plot(vx, vs, color=color, lw=1.2, marker="o", ms=3, alpha=0.8, label=variant if j == 0 else None)
    a1.set_title("training loss (each seed a line)")
    a1.set_xlabel("optimizer step")
    a1.legend(fontsize=8)
    a2.set_title("validation SDR (fast, whole-crop)")
    a2.set_xlabel("optimizer step")
    a2.set_ylabel("dB")
    return Section("Training curves", "From each run's train.csv; a pretrain variant's second phase continues "
                   "after its first phase's steps.", plots=[to_plot(fig, "training loss and validation SDR")])


def _listen(r: Mapping[str, Any], comp: Comparison) -> Section:
    seconds = comp.cfg.scoring.excerpt_seconds
    stem = "vocals" if "vocals" in r["stems"] else r["stems"][0]
    if seconds <= 0:
        return Section("Listen", "Excerpts are off (scoring.excerpt_seconds: 0).")
    found = find_tracks(comp.heldout.root, allow_stem_mp4=True)
    pick = _loudest(comp, found, stem, seconds)
    if pick is None:
        return Section("Listen", f"No held-out song has a non-silent {stem} reference to listen to.")
    song, start, sr = pick
    seed = comp.cfg.seeds[0]
    sounds = [(f"mixture ({song})", _read(ReferenceTrack(song, found[song]), MIXTURE)[0]),
              (f"reference {stem}", _read(ReferenceTrack(song, found[song]), stem)[0])]
    for spec in comp.specs:
        if spec.seed == seed:
            x, _ = audio.read(comp.run_dir(spec.folder) / ESTIMATES / song / f"{stem}.wav")
            sounds.append((f"{spec.variant} (seed {seed})", x))
    n = round(seconds * sr)
    audios = [Audio(_ogg(x[:, start:start + n], sr), caption) for caption, x in sounds]
    return Section("Listen", f"{seconds:g} s of {song} from {start / sr:.1f} s (where the reference {stem} is "
                   f"loudest): the separated {stem} of each variant, trained from seed {seed}, at the level each "
                   "model gives it.", audios=audios)


def _read(ref: ReferenceTrack, stem: str) -> tuple[np.ndarray, int]:
    if ref.is_stem_mp4:
        return audio.read(ref.path, stream=audio.STEM_MP4_STREAMS.index(stem))
    path = ref.stem_path(stem)
    assert path is not None
    return audio.read(path)


def _loudest(comp: Comparison, found: Mapping[str, Path], stem: str, seconds: float) -> tuple[str, int, int] | None:
    """(song, start frame, rate) of the excerpt window where the first non-silent reference ``stem`` is loudest."""
    for song in comp.heldout.tracks:
        ref = ReferenceTrack(song, found[song])
        x, sr = _read(ref, stem)
        if not np.any(x):
            continue
        n, hop = round(seconds * sr), max(1, sr // 4)
        energy = np.concatenate([[0.0], np.cumsum((x.astype(np.float64) ** 2).sum(axis=0))])
        starts = np.arange(0, max(1, x.shape[1] - n + 1), hop)
        ends = np.minimum(starts + n, x.shape[1])
        return song, int(starts[int(np.argmax(energy[ends] - energy[starts]))]), int(sr)
    return None


def _ogg(x: np.ndarray, sr: int) -> str:
    with tempfile.TemporaryDirectory(prefix="stemdb-excerpt-") as tmp:
        path = audio.write(Path(tmp) / "x.ogg", np.clip(x, -1.0, 1.0), sr, subtype="VORBIS")
        return audio_uri(path.read_bytes())


def _cost(r: Mapping[str, Any]) -> Section:
    t = r["timing"]
    rows = [["comparison wall time (s)", fmt(t["wall_s"], 1)], ["training wall time (s)", fmt(t["train_wall_s"], 1)],
            ["separation wall time (s)", fmt(t["separate_wall_s"], 1)],
            ["scoring wall time (s)", fmt(t["scoring_wall_s"], 1)],
            ["tracks scored (baselines included)", fmt(t["scored_tracks"])],
            ["minutes of audio scored", fmt(t["scored_audio_minutes"], 2)],
            ["scoring seconds per minute of audio", fmt(t["scoring_s_per_audio_minute"], 2)],
            ["scoring share of the wall time", "—" if t["scoring_share"] is None else f"{100 * t['scoring_share']:.1f} %"]]
    return Section("Cost", "Scoring runs in a process pool over songs and runs, bounded by the cores and by the "
                   "memory museval needs per track. Times of this invocation (a rerun reuses finished runs and "
                   "scores).", [Table("Where the time went", ["", "value"], rows)])


__all__ = ["compare_report"]

"""``gpu.md`` from the suite's ``gpu.json``: the tables docs/benchmarks.md shows, one section per part.

    python bench/gpu/gpu_report.py OUT/gpu.json      # print the markdown again
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

STEMS = ("vocals", "drums", "bass", "other")
#: Goals the issue sets for an H100.
GOAL_AUGMENT_RT = 25_000.0
GOAL_STREAM_RATIO = 0.9
GOAL_SCALING = 12.0


def num(x: object, fmt: str = ".1f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, fmt)


def goal(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return f"goal >= {target:g}: {'met' if value >= target else 'not met'}"


def header(r: dict) -> list[str]:
    m = r.get("machine", {})
    gpu = m.get("gpu") or "no CUDA device"
    lines = [f"Run {m.get('date', '?')}, {r.get('mode')}: {gpu}"
             + (f" ({m['gpu_memory_gib']} GiB, {m.get('multiprocessors')} SMs)" if "gpu_memory_gib" in m else "")
             + f", {m.get('cpus')} CPU cores, Python {m.get('python')}, torch {m.get('torch')}, CUDA {m.get('cuda')}"
             + (f", driver/name `{m['nvidia_smi']}`" if m.get("nvidia_smi") else "") + ".",
             "",
             f"Suite wall time {num(r.get('suite_s'), '.0f')} s plus {num(r.get('install_s'), '.0f')} s of wheel "
             "installs.",
             "",
             "| part | status | seconds | time box |",
             "|---|---|---|---|"]
    for name, p in r.get("parts", {}).items():
        lines.append(f"| {name}: {p.get('title')} | {p.get('status')} | {num(p.get('seconds'), '.0f')} | "
                     f"{num(p.get('time_box_s'), '.0f')} |")
    return lines


def tests(f: dict) -> list[str]:
    lines = [f"passed {f.get('passed', 0)}, failed {f.get('failed', 0)}, errors {f.get('errors', 0)}, "
             f"skipped {f.get('skipped', 0)}"]
    lines += [f"- failing: `{t}`" for t in f.get("failures", [])]
    return lines


def train(f: dict) -> list[str]:
    lines = [f"Device: {f.get('device')}. Optimizer steps of `Trainer.train_step` on a fixed batch on the device.",
             "", "| model | precision | batch x s | params | ms/step | steps/s | audio-s/s | peak GiB |",
             "|---|---|---|---|---|---|---|---|"]
    for row in f.get("rows", []):
        lines.append(f"| {row['model']} | {row['precision']} | {row['batch']} x {row['seconds']:g} | "
                     f"{row['params_m']:.1f} M | {num(row['ms_per_step'])} | {num(row['steps_per_s'], '.2f')} | "
                     f"{num(row['audio_s_per_s'], '.0f')} | {num(row.get('peak_gib'), '.2f')} |")
    ratios = f.get("bf16_over_fp32", {})
    if ratios:
        lines += ["", "bf16 / fp32 step rate: " + ", ".join(f"{m} {v:.2f}x" for m, v in ratios.items())]
    return lines


def augment(f: dict) -> list[str]:
    rt = f.get("realtime", {})
    lines = [f"Device: {f.get('device')}; batch {f.get('batch')} x {f.get('seconds')} s stereo.", "",
             "| case | x real time |", "|---|---|"]
    lines += [f"| {k} | {v:,.0f} |" for k, v in rt.items()]
    worst = min((rt.get("pitch per-item"), rt.get("stretch per-item")), key=lambda v: v or 0.0)
    lines += ["", f"Per-item vs one-rate baseline: pitch {num(f.get('ratio_pitch'), '.2f')}x, stretch "
              f"{num(f.get('ratio_stretch'), '.2f')}x. Slower per-item case {num(worst, ',.0f')}x real time "
              f"({goal(worst, GOAL_AUGMENT_RT)})."]
    san = f.get("sanity_db", {})
    if san:
        lines.append("Error vs librosa pitch_shift (+2 st): " + ", ".join(f"{k} {v:.1f} dB" for k, v in san.items()))
    return lines


def stream(f: dict) -> list[str]:
    return [f"Device {f.get('device')}, U-Net ({f.get('model')}), batch {f.get('batch')} x {f.get('seconds')} s, "
            f"{f.get('precision')}, {f.get('workers')} loader workers, pitch/stretch p = 0.3 per stem on the GPU.",
            "", "| feed | ms per step |", "|---|---|",
            f"| synthetic tensors on the device | {num(f.get('synthetic_ms'))} |",
            f"| RemixStream + StreamLoader + GpuAugment | {num(f.get('fed_ms'))} |", "",
            f"Fed / synthetic step rate: {num(f.get('ratio'), '.2f')} ({goal(f.get('ratio'), GOAL_STREAM_RATIO)})."]


def scaling(f: dict) -> list[str]:
    lines = [f"{f.get('cores')} cores, {f.get('seconds')} s mixtures, chunks of {f.get('chunk_size')}, output under "
             f"`{f.get('output')}`.", "",
             "| workers | mixtures | wall s | mixtures/s | x real time | speed-up |", "|---|---|---|---|---|---|"]
    for w, r in f.get("by_workers", {}).items():
        lines.append(f"| {w} | {r['mixtures']} | {r['wall_s']:.1f} | {r['mix_per_s']:.1f} | {r['realtime']:.0f} | "
                     f"{r['speedup']:.2f}x |")
    lines += ["", f"Speed-up at {f.get('max_workers')} workers: {num(f.get('speedup_max'), '.2f')}x "
              f"({goal(f.get('speedup_max'), GOAL_SCALING)})."]
    return lines


def proof(f: dict) -> list[str]:
    """The comparison's table (``bench/compare.py --json``: train.compare's results)."""
    if not f or "table" not in f:
        return ["no comparison results"]

    def sdr(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.2f}"

    names = {"mixture_n": "mixture / 4 (no model)", "mixture": "mixture (no model)"}
    steps = f["facts"]["steps_per_run"]
    lines = ["| row | steps | " + " | ".join(f"{s} SDR / dSDR over mix/4" for s in STEMS) + " |",
             "|---|---|" + "---|" * len(STEMS)]
    for row, per in f["table"].items():
        imp = f["improvement"]["mixture_n"].get(row)
        n = ", ".join(str(v) for k, v in steps.items() if k.split("/")[0] == row) or "-"
        cells = [f"{sdr(per[s]['SDR']['median'])} / {sdr(imp[s]['SDR']['median']) if imp else '0'}" for s in STEMS]
        lines.append(f"| {names.get(row, row)} | {n} | " + " | ".join(cells) + " |")
    verdicts = [f"- {v} vs real, {s} SDR: {per[s]['SDR']['verdict']}" for v, per in f.get("vs_real", {}).items()
                for s in STEMS]
    t = f["timing"]
    return [*lines, "", *verdicts, "", f"Scoring: {sdr(t['scoring_s_per_audio_minute'])} s per minute of audio, "
            f"{100 * (t['scoring_share'] or 0):.1f} % of the comparison's {t['wall_s']:.0f} s."]


SECTIONS: dict[str, tuple[str, Callable[[dict], list[str]]]] = {
    "tests": ("GPU tests (`pytest -m gpu`)", tests),
    "train": ("Training step rates (`bench/train_models.py`)", train),
    "augment": ("GpuAugment per-item pitch and stretch (`bench/stream_gpu_augment.py`)", augment),
    "stream": ("U-Net fed by the remix stream (`bench/stream_gpu.py`)", stream),
    "scaling": ("`build_remix` scaling (`bench/remix_scaling.py`)", scaling),
    "proof": ("The proof: compare-datasets on the train pool (`bench/compare.py`)", proof),
}


def markdown(result: dict) -> str:
    lines = ["# GPU suite (`bench/gpu/suite.sh`)", "", *header(result)]
    for name, part in result.get("parts", {}).items():
        title, render = SECTIONS[name]
        lines += ["", f"## {title}", ""]
        if part.get("minutes_per_variant") is not None:
            lines += [f"{part['minutes_per_variant']:g} training minutes per variant "
                      f"({', '.join(part.get('variants', []))}), same seed and model; SDR is the median over the "
                      "held-out songs (BSSEval v4), dSDR its improvement over the mixture divided by 4.", ""]
        if part.get("figures"):
            lines += render(part["figures"])
        if part.get("status") != "ok":
            lines += ["", f"Status: **{part.get('status')}** (rc {part.get('rc')}); last lines of its output:", "",
                      "```", part.get("log_tail", "").strip(), "```"]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1]).read_text())))

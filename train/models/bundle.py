"""A bundle: several trained models joined into one separator, each giving some of the targets.

Per-target training (``stemdb train --target vocals``) gives one run per stem, each with its own architecture,
loss, steps and learning rate; ``stemdb bundle`` (:func:`train.bundle.bundle_runs`) joins such runs into one
``bundle`` model that ``stemdb separate`` and ``stemdb evaluate-run`` use like any single model::

    bundle = build_model("bundle", targets=("vocals", "drums"), channels=2, sample_rate=44100, members=[
        {"name": "cunet", "targets": ["vocals"], **cunet_options},
        {"name": "d3net", "targets": ["drums", "bass"], "use": ["drums"], **d3net_options},
    ])
    bundle(mixture)   # (B, C, T) -> (B, 2, C, T): vocals from the cunet, drums from the d3net

A member is a model config (``SeparationModel.config()``: ``name``, ``targets`` and options; ``channels`` and
``sample_rate`` default to the bundle's and must equal them) plus ``use``: the member's targets the bundle takes
(default: all of them). A member without ``targets`` separates the bundle's targets no other member gives (at most
one such member). Every bundle target must come from exactly one member: a missing or duplicated stem is an error
naming it. The members' weights live in ``members.<i>.*`` of the bundle's state dict (one checkpoint).

A conditioned member (one network for all its targets) is asked for its used targets only, one pass each
(``forward(mixture, target_index)``); other members compute all their targets and the used ones are kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from train.models import SeparationModel, build_model


def _member_slots(targets: tuple[str, ...], members: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The bundle targets each member gives (its ``use``, default its ``targets``; ``None`` targets: the rest).

    Raises:
        ValueError: a stem given by two members, a bundle stem no member gives, a member stem the bundle does not
            have or the member does not separate, or more than one member without ``targets``.
    """
    given: dict[str, int] = {}
    uses: list[list[str] | None] = []
    for i, m in enumerate(members):
        if not isinstance(m, Mapping) or not isinstance(m.get("name"), str):
            raise ValueError(f"bundle member {i} must be a model config with a 'name', got {m!r}")
        own = m.get("targets")
        use = list(m.get("use") or own or []) or None
        if use is not None and own is not None and any(t not in own for t in use):
            raise ValueError(f"bundle member {i} ({m['name']}): use {use} is not among its targets {list(own)}")
        uses.append(use)
        for t in use or []:
            if t not in targets:
                raise ValueError(f"bundle member {i} ({m['name']}) gives stem {t!r}, not a bundle target "
                                 f"({', '.join(targets)})")
            if t in given:
                raise ValueError(f"stem {t!r} is given by two bundle members ({given[t]} and {i})")
            given[t] = i
    rest = [t for t in targets if t not in given]
    open_members = [i for i, u in enumerate(uses) if u is None]
    if len(open_members) > 1:
        raise ValueError(f"bundle members {open_members} have no targets; at most one may take the rest")
    if open_members and rest:
        uses[open_members[0]], rest = rest, []
    if rest:
        raise ValueError(f"stem(s) {rest} given by no bundle member")
    if open_members and uses[open_members[0]] is None:
        raise ValueError(f"bundle member {open_members[0]} has no targets and none are left for it")
    return [list(u) for u in uses if u is not None]


class Bundle(SeparationModel):
    """Several models, each giving some of the targets (see the module docstring).

    Args:
        members: model configs (``SeparationModel.config()``), each with an optional ``use`` list.
    """

    name = "bundle"
    default_loss: ClassVar[str] = "l1_wave"
    TINY: ClassVar[dict[str, Any]] = {"members": [
        {"name": "unet", "targets": ["vocals"], "n_fft": 256, "hop_length": 64, "levels": 3, "base_filters": 4,
         "max_bin": 100, "dropout": 0.0},
        {"name": "blstm", "n_fft": 256, "hop_length": 64, "hidden": 16, "layers": 2, "max_bin": 100,
         "dropout": 0.0},
    ]}

    def __init__(self, *, targets: Sequence[str], channels: int = 2, sample_rate: int = 44100,
                 members: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(targets=targets, channels=channels, sample_rate=sample_rate)
        if isinstance(members, str | bytes | Mapping) or not isinstance(members, Sequence) or not members:
            raise ValueError(f"members must be a non-empty list of model configs, got {members!r}")
        self.uses = _member_slots(self.targets, members)
        nets = []
        for i, (m, use) in enumerate(zip(members, self.uses, strict=True)):
            opts = {k: v for k, v in m.items() if k not in ("name", "use", "targets")}
            for key in ("channels", "sample_rate"):
                if opts.setdefault(key, getattr(self, key)) != getattr(self, key):
                    raise ValueError(f"bundle member {i} ({m['name']}) has {key}={opts[key]}, the bundle "
                                     f"{getattr(self, key)}")
            nets.append(build_model(m["name"], targets=m.get("targets") or use, **opts))
        self.members = nn.ModuleList(nets)
        self._slots = [[self.targets.index(t) for t in use] for use in self.uses]

    def _arch_config(self) -> dict[str, Any]:
        return {"members": [{**net.config(), "use": list(use)} for net, use in zip(self.members, self.uses,
                                                                                   strict=True)]}

    def forward(self, mixture: Tensor) -> Tensor:
        """``(B, C, T)`` mixture -> ``(B, S, C, T)`` float32, each target from its member."""
        self.check_mixture(mixture)
        out: list[Tensor | None] = [None] * len(self.targets)
        for net, use, slots in zip(self.members, self.uses, self._slots, strict=True):
            for slot, est in zip(slots, self._member_estimates(net, mixture, use), strict=True):
                out[slot] = est.float()
        return torch.stack(out, dim=1)

    @staticmethod
    def _member_estimates(net: SeparationModel, mixture: Tensor, use: list[str]) -> list[Tensor]:
        """The used targets' ``(B, C, T)`` estimates of one member."""
        if getattr(net, "conditioned", False) and len(use) < len(net.targets):
            b = mixture.shape[0]
            return [net(mixture, net.target_index(t).to(mixture.device).expand(b))[:, 0] for t in use]
        est = net(mixture)
        return [est[:, net.targets.index(t)] for t in use]


__all__ = ["Bundle"]

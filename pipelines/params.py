"""Typed parameters of the Prefect flows and the ``pipelines`` section of ``data.yaml``, validated with pydantic.

Every flow validates its parameters with the models below before it does any work, so a bad value fails the run
at once with a :class:`stemdb.errors.ConfigError` that names the parameter, the value and what is allowed. The
constrained types (``NMixtures``, ``Seconds``, ...) are also used in the flows' signatures, so the deployments'
parameter schemas carry the same limits and the Prefect server rejects a bad ``--param`` before a run is created.

The ``pipelines`` section of ``data.yaml`` (all keys optional)::

    pipelines:
      task_runner: threads      # threads | processes | dask: how mapped tasks (render chunks, measure batches) run
      workers: null             # threads / processes: pool size (null: one per core)
      dask_address: null        # dask: null = a LocalCluster on 127.0.0.1; tcp://HOST:PORT = an existing scheduler
      dask_workers: 2           # dask LocalCluster: worker processes (one thread each)
      chunk_size: 25            # build-remix: mixtures per render task (10-50 keeps per-task overhead small)
      retries: 2                # retries of the I/O tasks (render a chunk, measure a batch, write the manifest)
      retry_delay_s: 2.0        # seconds between two tries

This module imports neither prefect nor the audio stack.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stemdb.config import validate_config
from stemdb.errors import ConfigError

TaskRunnerName = Literal["threads", "processes", "dask"]
TASK_RUNNERS: tuple[str, ...] = ("threads", "processes", "dask")

#: Default output folder of ``build-remix`` (relative to the working directory of the run).
DEFAULT_REMIX_OUT = Path("work/remix")
#: Default folder of the ``dataset-stats`` reports.
DEFAULT_REPORTS_OUT = Path("work/reports")

# Constrained parameter types, shared by the models and the flow signatures.
NMixtures = Annotated[int, Field(ge=1, le=10_000_000, description="number of mixtures to draw and render")]
Seconds = Annotated[float, Field(gt=0.0, le=600.0, description="mixture length in seconds (default: data.yaml)")]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1, description="seed: same arguments, same bytes")]
Workers = Annotated[int, Field(ge=1, le=512, description="pool size of the task runner")]
ChunkSize = Annotated[int, Field(ge=1, le=1000, description="mixtures per render task")]
BatchSize = Annotated[int, Field(ge=1, le=10_000, description="files per measuring task")]

M = TypeVar("M", bound=BaseModel)

_DASK_ADDRESS = re.compile(r"^(tcp|tls|ucx|inproc|ws|wss)://[^\s/]+(:\d{1,5})?/?$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PipelinesConfig(_Model):
    """The ``pipelines`` section of ``data.yaml`` (see the module docstring for each key)."""

    task_runner: TaskRunnerName = "threads"
    workers: Workers | None = None
    dask_address: str | None = None
    dask_workers: Annotated[int, Field(ge=1, le=512)] = 2
    chunk_size: ChunkSize = 25
    retries: Annotated[int, Field(ge=0, le=20)] = 2
    retry_delay_s: Annotated[float, Field(ge=0.0, le=3600.0)] = 2.0

    @field_validator("dask_address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is None or _DASK_ADDRESS.match(v):
            return v
        raise ValueError("must be null (a LocalCluster) or a scheduler address such as tcp://10.0.0.5:8786")

    def with_overrides(self, **values: Any) -> PipelinesConfig:
        """A copy with the given keys replaced (``None`` values are ignored), validated again."""
        data = self.model_dump()
        data.update({k: v for k, v in values.items() if v is not None})
        return parse_model(PipelinesConfig, data, what="pipelines", prefix="pipelines.")


def pipelines_config(section: Mapping[str, Any] | PipelinesConfig | None) -> PipelinesConfig:
    """Validate the ``pipelines`` section of ``data.yaml`` (a dict; ``None`` gives the defaults).

    Raises:
        ConfigError: naming ``pipelines.<key>``, the value and what is allowed.
    """
    if isinstance(section, PipelinesConfig):
        return section
    if section is not None and not isinstance(section, Mapping):
        raise ConfigError(f"pipelines: must be a mapping, got {type(section).__name__}", key="pipelines")
    return parse_model(PipelinesConfig, dict(section or {}), what="pipelines", prefix="pipelines.")


class IngestParams(_Model):
    """Parameters of the ``ingest-stems`` flow."""

    config: Path | None = None
    catalog: Path | None = None
    sources: tuple[str, ...] | None = None
    tempo: bool | None = None
    batch_size: BatchSize | None = None
    task_runner: TaskRunnerName | None = None
    workers: Workers | None = None


class RemixParams(_Model):
    """Parameters of the ``build-remix`` flow (the meaning of ``stemdb remix``'s options)."""

    catalog: Path | None = None
    n_mixtures: NMixtures = 100
    seconds: Seconds | None = None
    seed: Seed = 0
    out: Path = DEFAULT_REMIX_OUT
    config: Path | None = None
    workers: Workers | None = None
    chunk_size: ChunkSize | None = None
    task_runner: TaskRunnerName | None = None

    @field_validator("out")
    @classmethod
    def _out(cls, v: Path) -> Path:
        if str(v).strip() in ("", "."):
            raise ValueError("must name an output folder (not empty, not '.')")
        if v.exists() and not v.is_dir():
            raise ValueError("exists and is not a folder")
        return v


class StatsParams(_Model):
    """Parameters of the ``dataset-stats`` flow."""

    config: Path | None = None
    catalog: Path | None = None
    remix_dir: Path | None = None
    out: Path = DEFAULT_REPORTS_OUT


def parse_model(model: type[M], values: Mapping[str, Any], *, what: str, prefix: str = "") -> M:
    """Validate ``values`` into ``model``; a failure becomes a ConfigError naming each bad key and its value
    (:func:`stemdb.config.validate_config`).

    ``what`` names the thing in the message (a flow name or a config section); ``prefix`` is put before each key.
    """
    return validate_config(model, values, prefix=prefix, what=f"{what}: invalid " + ("settings" if prefix else
                                                                                     "parameters"))


def check_params(model: type[M], flow: str, values: Mapping[str, Any]) -> M:
    """Validate a flow's parameters (the flow's ``locals()`` at entry) with ``model``; raises ConfigError."""
    return parse_model(model, {k: v for k, v in values.items() if k in model.model_fields}, what=flow)


__all__ = [
    "DEFAULT_REMIX_OUT",
    "DEFAULT_REPORTS_OUT",
    "TASK_RUNNERS",
    "BatchSize",
    "ChunkSize",
    "IngestParams",
    "NMixtures",
    "PipelinesConfig",
    "RemixParams",
    "Seconds",
    "Seed",
    "StatsParams",
    "TaskRunnerName",
    "Workers",
    "check_params",
    "parse_model",
    "pipelines_config",
]

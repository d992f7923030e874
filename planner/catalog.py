"""The catalogs of models and GPUs, shipped as package data (data/models.yaml, data/gpus.yaml).

Names resolve case-insensitively through each entry's key, its aliases, and (for models) the part
of a Hugging Face id after the organisation, so `Llama-3.1-8B-Instruct` finds
`meta-llama/Llama-3.1-8B`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import ValidationError

from tandem.planner.errors import PlannerError, UnknownGpuError, UnknownModelError
from tandem.planner.gpu import GpuSpec
from tandem.planner.model import ModelShape


def read_data_yaml(*parts: str) -> Any:
    """A YAML file of the package's data folder, parsed."""
    path = resources.files("tandem.planner").joinpath("data", *parts)
    return yaml.safe_load(path.read_text())


def _names(key: str, aliases: Iterable[str]) -> set[str]:
    names = {key, *aliases}
    return {n.lower() for n in names} | {n.rsplit("/", 1)[-1].lower() for n in names}


def _index(entries: Mapping[str, ModelShape | GpuSpec]) -> dict[str, str]:
    index: dict[str, str] = {}
    for key, entry in entries.items():
        for name in _names(key, entry.aliases):
            if index.get(name, key) != key:
                raise PlannerError(f"catalog name {name!r} is claimed by both {index[name]} and {key}")
            index[name] = key
    return index


@dataclass(frozen=True)
class Catalog:
    """Models and GPUs by canonical name, with lookup by any of their names."""

    models: Mapping[str, ModelShape]
    gpus: Mapping[str, GpuSpec]
    _model_index: dict[str, str] = field(init=False, repr=False)
    _gpu_index: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_model_index", _index(self.models))
        object.__setattr__(self, "_gpu_index", _index(self.gpus))

    def model(self, name: str) -> ModelShape:
        key = self._model_index.get(name.strip().lower())
        if key is None:
            raise UnknownModelError(_unknown("model", name, self.models, self._model_index))
        return self.models[key]

    def gpu(self, name: str) -> GpuSpec:
        key = self._gpu_index.get(name.strip().lower())
        if key is None:
            raise UnknownGpuError(_unknown("GPU type", name, self.gpus, self._gpu_index))
        return self.gpus[key]

    def has_model(self, name: str) -> bool:
        return name.strip().lower() in self._model_index


def _unknown(kind: str, name: str, entries: Mapping[str, object], index: Mapping[str, str]) -> str:
    close = difflib.get_close_matches(name.lower(), list(index), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(sorted({index[c] for c in close}))}?)" if close else ""
    extra = "; or describe it with spec.model.architecture or a config.json" if kind == "model" else ""
    return f"unknown {kind} {name!r}{hint}. Known: {', '.join(entries)}{extra}"


@cache
def load_catalog() -> Catalog:
    """The catalog shipped with the package (parsed once)."""
    try:
        models = {
            key: ModelShape(name=key, **entry)
            for key, entry in read_data_yaml("models.yaml")["models"].items()
        }
        gpus = {key: GpuSpec(name=key, **entry) for key, entry in read_data_yaml("gpus.yaml")["gpus"].items()}
    except ValidationError as exc:
        raise PlannerError(f"the planner's catalog data is invalid: {exc}") from exc
    return Catalog(models=models, gpus=gpus)

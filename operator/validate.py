"""The validate step: what the schema cannot say about a spec, each problem naming its field.

It runs after the schema (pydantic, the CRD's own models) and before the planner, so a pool it
refuses creates nothing. Refused:

- an ``env`` name the operator sets (``MANAGED_ENV``, every ``LMCACHE_*``) or one given twice: the
  API server answers a duplicate name with 500 "duplicate entries" on every apply, and LMCache lets
  ``LMCACHE_*`` override its rendered file;
- an ``extraArgs`` word that sets a flag the operator manages (``MANAGED_FLAGS``), read as vLLM's
  parser reads it (vllm/utils/argparse_utils.py, FlexibleArgumentParser.parse_args): ``--a_b`` is
  ``--a-b``, ``--flag=value`` and ``--flag.key value`` set ``--flag``, a switch has ``--no-`` and
  ``--enable-``/``--disable-`` forms, argparse takes unambiguous prefixes (``allow_abbrev``), and a
  one-letter alias may carry its value (``-qfp8``); and a word with a space, which argparse takes
  as a positional;
- pipeline stages with a connector that needs one stage (LMCache: ``LayoutRules.single_stage``);
- a shared router's name that a pool's own objects could take (``naming.shared_router_problem``).
"""

from __future__ import annotations

from collections.abc import Iterator

from tandem.api import InferencePoolSpec, RoleSpec
from tandem.operator.build.engine import MANAGED_ENV, MANAGED_ENV_PREFIXES, MANAGED_FLAGS
from tandem.operator.build.managed import Managed
from tandem.operator.naming import Role, shared_router_problem
from tandem.planner.connectors import LAYOUT_RULES


def spec_problems(spec: InferencePoolSpec) -> list[str]:
    """Every problem of the spec, each as "spec.field: why"."""
    return [*_env_problems(spec), *_args_problems(spec), *_connector_problems(spec), *_router_problems(spec)]


def _router_problems(spec: InferencePoolSpec) -> Iterator[str]:
    shared = spec.router.shared
    problem = shared_router_problem(shared) if shared is not None else None
    if problem is not None:
        yield f"spec.router.shared: {problem}"


def _env_problems(spec: InferencePoolSpec) -> Iterator[str]:
    first: dict[str, int] = {}
    for index, variable in enumerate(spec.engine.env):
        where, name = f"spec.engine.env[{index}].name", variable.name
        managed = managed_env(name)
        if managed is not None:
            yield f"{where}: {name} is managed by the operator ({managed.owner})"
        elif name in first:
            yield f"{where}: {name} is already set by spec.engine.env[{first[name]}]"
        first.setdefault(name, index)


def managed_env(name: str) -> Managed | None:
    """The managed setting an environment variable name would change, if any."""
    exact = next((managed for managed in MANAGED_ENV if managed.name == name), None)
    return exact or next((prefix for prefix in MANAGED_ENV_PREFIXES if name.startswith(prefix.name)), None)


def _roles(spec: InferencePoolSpec) -> tuple[tuple[Role, RoleSpec], ...]:
    return (Role.PREFILL, spec.prefill), (Role.DECODE, spec.decode)


def _args_problems(spec: InferencePoolSpec) -> Iterator[str]:
    fields = [
        ("spec.engine.extraArgs", spec.engine.extra_args),
        *((f"spec.{role}.extraArgs", pins.extra_args) for role, pins in _roles(spec)),
    ]
    for field, args in fields:
        for index, word in enumerate(args):
            where = f"{field}[{index}]"
            if word.startswith("-") and " " in word.split("=", 1)[0]:
                yield f"{where}: {word!r} holds a space: give each flag and each value its own item"
                continue
            managed = managed_flag(word)
            if managed is not None:
                yield f"{where}: {word!r} sets {managed.name}, which the operator manages ({managed.owner})"


def _forms(managed: Managed) -> set[str]:
    """Every spelling that sets ``managed``: the name, its negations, its aliases."""
    forms = {managed.name, *managed.aliases}
    if managed.name.startswith("--"):
        stem = managed.name.removeprefix("--")
        forms.add(f"--no-{stem}")
        if stem.startswith("enable-"):
            forms.add("--disable-" + stem.removeprefix("enable-"))
    return forms


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def managed_flag(word: str) -> Managed | None:
    """The managed flag a command-line word sets, as vLLM's parser reads it; None for any other word
    (a value, a number, a flag the operator leaves to the user)."""
    if not word.startswith("-") or word in ("-", "--") or _is_number(word):
        return None
    option = word.split("=", 1)[0].split(".", 1)[0]
    if option.startswith("--"):
        option = option.replace("_", "-")
    for managed in MANAGED_FLAGS:
        for form in _forms(managed):
            # An exact name or an abbreviation (argparse takes a unique prefix), or a one-letter
            # alias with its value attached.
            attached = not form.startswith("--") and len(form) == 2 and word.startswith(form)
            if form.startswith(option) or attached:
                return managed
    return None


def _connector_problems(spec: InferencePoolSpec) -> Iterator[str]:
    connector = spec.disaggregation.connector
    single_stage = LAYOUT_RULES[connector].single_stage
    if single_stage is None:
        return
    for role, pins in _roles(spec):
        pipeline = pins.pipeline_parallel
        if pipeline is not None and pipeline > 1:
            yield (
                f"spec.{role}.pipelineParallel: {pipeline} stages with spec.disaggregation.kvTransfer."
                f"connector {connector}, but {single_stage}"
            )

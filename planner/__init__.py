"""Tandem's planner: sizes prefill and decode pools analytically, without a GPU, and explains why.

Entry points: `plan_pool(spec)` for an InferencePool spec, `plan(PlanRequest(...))` below it. The
cost model (`tandem.planner.cost`) is public so a calibration fit can call it. Imports only
`tandem.api`.
"""

from tandem.planner.calibration import Calibration, load_calibration
from tandem.planner.catalog import Catalog, load_catalog
from tandem.planner.errors import (
    CalibrationError,
    ModelConfigError,
    PlannerError,
    UnknownGpuError,
    UnknownModelError,
)
from tandem.planner.gpu import GpuSpec
from tandem.planner.hf_config import shape_from_hf_config
from tandem.planner.model import ModelShape, shape_from_architecture
from tandem.planner.plan import DeploymentPlan, Plan, RolePlan
from tandem.planner.planner import plan, plan_pool, pool_model, resolve_model
from tandem.planner.request import GpuBudget, PlanRequest, RolePins

__all__ = [
    "Calibration",
    "CalibrationError",
    "Catalog",
    "DeploymentPlan",
    "GpuBudget",
    "GpuSpec",
    "ModelConfigError",
    "ModelShape",
    "Plan",
    "PlanRequest",
    "PlannerError",
    "RolePins",
    "RolePlan",
    "UnknownGpuError",
    "UnknownModelError",
    "load_calibration",
    "load_catalog",
    "plan",
    "plan_pool",
    "pool_model",
    "resolve_model",
    "shape_from_architecture",
    "shape_from_hf_config",
]

"""The planner's errors: one hierarchy, so callers catch `PlannerError` and show its message.

An infeasible target is not an error: `plan()` returns a plan marked infeasible with the reason.
These are for requests the planner cannot even evaluate.
"""

from __future__ import annotations


class PlannerError(Exception):
    """Base of every error the planner raises on bad input."""


class UnknownModelError(PlannerError):
    """The model is neither in the catalog nor described by an architecture or a config.json."""


class UnknownGpuError(PlannerError):
    """The GPU type is not in the catalog."""


class ModelConfigError(PlannerError):
    """A Hugging Face config.json could not be read or lacks a field the planner needs."""


class CalibrationError(PlannerError):
    """A calibration file is malformed."""

"""The InferencePool API (tandem.dev/v1alpha1): pydantic models, the single source of truth.

The CRD in crds/ is generated from these models (`tandem crds`). This package imports no other
Tandem package.
"""

from tandem.api.autoscaling import (
    AutoscalingMode,
    AutoscalingSpec,
    AutoscalingStatus,
    MetricsSource,
    ObservedWorkload,
)
from tandem.api.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION, InferencePool
from tandem.api.slo import SloVerdict, slo_verdict
from tandem.api.spec import (
    AcceleratorSpec,
    AdmissionPolicy,
    BalancePolicy,
    DisaggregationMode,
    DisaggregationSpec,
    EndpointPickerFailureMode,
    EndpointPickerSpec,
    EngineSpec,
    EngineType,
    GatewayApiSpec,
    InferencePoolSpec,
    KvConnector,
    ModelArchitecture,
    ModelSpec,
    Placement,
    RoleSpec,
    RouterSpec,
    SloSpec,
    TokenStats,
    WorkloadSpec,
)
from tandem.api.status import (
    Condition,
    ConditionType,
    InferencePoolStatus,
    PlanStatus,
    RolePlanStatus,
    RoleStatus,
    RouterStatus,
)
from tandem.api.timing import EngineTiming

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "AcceleratorSpec",
    "AdmissionPolicy",
    "AutoscalingMode",
    "AutoscalingSpec",
    "AutoscalingStatus",
    "BalancePolicy",
    "Condition",
    "ConditionType",
    "DisaggregationMode",
    "DisaggregationSpec",
    "EndpointPickerFailureMode",
    "EndpointPickerSpec",
    "EngineSpec",
    "EngineTiming",
    "EngineType",
    "GatewayApiSpec",
    "InferencePool",
    "InferencePoolSpec",
    "InferencePoolStatus",
    "KvConnector",
    "MetricsSource",
    "ModelArchitecture",
    "ModelSpec",
    "ObservedWorkload",
    "Placement",
    "PlanStatus",
    "RolePlanStatus",
    "RoleSpec",
    "RoleStatus",
    "RouterSpec",
    "RouterStatus",
    "SloSpec",
    "SloVerdict",
    "TokenStats",
    "WorkloadSpec",
    "slo_verdict",
]

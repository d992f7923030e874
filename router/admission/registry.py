"""The admission policies, by the API's name for each (``tandem.api.AdmissionPolicy``).

Adding a policy is a module beside this one and one line here (docs/add-an-admission-policy.md).
"""

from __future__ import annotations

from tandem.api.spec import AdmissionPolicy
from tandem.router.admission.adaptive import Adaptive
from tandem.router.admission.base import Admission
from tandem.router.admission.cost_optimized import CostOptimized
from tandem.router.admission.fifo import Fifo
from tandem.router.admission.priority import Priority
from tandem.router.admission.slo import EarliestDeadline

ADMISSION: dict[AdmissionPolicy, type[Admission]] = {
    AdmissionPolicy.FIFO: Fifo,
    AdmissionPolicy.PRIORITY: Priority,
    AdmissionPolicy.SLO: EarliestDeadline,
    AdmissionPolicy.COST_OPTIMIZED: CostOptimized,
    AdmissionPolicy.ADAPTIVE: Adaptive,
}

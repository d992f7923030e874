"""Admission: how many of a pool's requests run at once, and in which order the rest wait.

`AdmissionQueue` (queue.py) bounds the running requests and the queue; the pool's policy
(`Admission`, base.py) orders the waiters and says when to shed. `ADMISSION` (registry.py) holds
the policies by the API's name (``tandem.api.AdmissionPolicy``): `fifo`, `priority`, `slo`,
`cost-optimized`, `adaptive`, one module each. Adding one is a module and one line in registry.py
(docs/add-an-admission-policy.md).
"""

from tandem.router.admission.base import Admission, AdmissionContext, GpuTime, Need, Ticket
from tandem.router.admission.queue import AdmissionQueue
from tandem.router.admission.registry import ADMISSION

__all__ = ["ADMISSION", "Admission", "AdmissionContext", "AdmissionQueue", "GpuTime", "Need", "Ticket"]

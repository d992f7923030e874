"""Balance policies: which of the eligible decoders takes the request.

Each policy is a module here with a `Balance` (base.py): the request facts it needs, its scorer and
picker. `BALANCE` (registry.py) holds them by the API's name (``tandem.api.BalancePolicy``).
Adding one is a module and one line in registry.py (docs/add-a-balance-policy.md).
"""

from tandem.router.decision.balance.base import Balance, Fact
from tandem.router.decision.balance.registry import BALANCE

__all__ = ["BALANCE", "Balance", "Fact"]

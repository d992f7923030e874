"""The balance policies, by the API's name for each (``tandem.api.BalancePolicy``).

Adding a policy is a module beside this one and one line here (docs/add-a-balance-policy.md).
"""

from __future__ import annotations

from tandem.api.spec import BalancePolicy
from tandem.router.decision.balance.base import Balance
from tandem.router.decision.balance.least_load import LeastLoad
from tandem.router.decision.balance.prefix import Prefix
from tandem.router.decision.balance.random_choice import RandomChoice
from tandem.router.decision.balance.round_robin import RoundRobin
from tandem.router.decision.balance.session import Session

BALANCE: dict[BalancePolicy, Balance] = {
    BalancePolicy.LEAST_LOAD: LeastLoad(),
    BalancePolicy.ROUND_ROBIN: RoundRobin(),
    BalancePolicy.RANDOM: RandomChoice(),
    BalancePolicy.SESSION: Session(),
    BalancePolicy.PREFIX: Prefix(),
}

"""Per-API-key token budgets: the bucket (an injected clock), the keys file's grant, and the 429
with OpenAI's body and Retry-After through the router."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from router_support import MODEL, free_port, router_client

from tandem.router.auth import ApiKeys, load_api_keys
from tandem.router.errors import TokenBudgetError
from tandem.router.settings import RouterSettings, StaticPoolSettings
from tandem.router.token_budget import TokenBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("charges", "refused_at", "retry_after"),
    [
        ([(0, 60), (0, 40)], None, None),  # exactly the budget
        ([(0, 60), (0, 60)], 1, 12),  # 40 left; 20 more come in 12 s at 100 a minute
        ([(0, 60), (12, 60)], None, None),  # after those 12 s
        ([(0, 100), (60, 100), (120, 100)], None, None),  # refilled a minute later, never above the limit
        ([(0, 101)], 0, None),  # more than the whole budget: no wait would do
    ],
)
def test_a_budget_refills_at_its_rate_and_refuses_what_it_cannot_cover(
    charges: list[tuple[float, int]], refused_at: int | None, retry_after: int | None
) -> None:
    clock = Clock()
    budget = TokenBudget(100, "minute", clock)
    for index, (at, tokens) in enumerate(charges):
        clock.now = at
        if index == refused_at:
            with pytest.raises(TokenBudgetError) as refused:
                budget.charge(tokens)
            assert refused.value.retry_after_s == retry_after
            assert refused.value.status == 429
            return
        budget.charge(tokens)
    assert refused_at is None


def test_a_refusal_charges_nothing() -> None:
    clock = Clock()
    budget = TokenBudget(100, "minute", clock)
    budget.charge(90)
    with pytest.raises(TokenBudgetError):
        budget.charge(20)
    budget.charge(10)  # the 10 left are still there


def test_the_refusal_is_openais_rate_limit_answer() -> None:
    error = TokenBudgetError("spent", retry_after_s=7)
    assert json.loads(error.body())["error"] == {
        "message": "spent",
        "type": "tokens",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert error.headers() == {"Retry-After": "7"}


def test_a_key_may_carry_a_token_budget(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("batch-key tokens=2000000/day\nfront-key priority\n")
    check = ApiKeys(load_api_keys(keys)).check
    batch = check(b"Bearer batch-key").budget
    assert batch is not None and (batch.limit, batch.period) == (2_000_000, "day")
    assert check(b"Bearer front-key").budget is None


@pytest.mark.parametrize(
    "line", ["k tokens=many/day", "k tokens=10/week", "k tokens=0/hour", "k tokens=1/day tokens=2/day"]
)
def test_a_malformed_budget_fails_the_load_naming_the_line(tmp_path: Path, line: str) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# keys\n{line}\n")
    with pytest.raises(ValueError, match="line 2"):
        load_api_keys(keys)


@pytest.mark.slow
async def test_a_spent_budget_answers_429_before_the_request_queues(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("small-key tokens=100/hour\n")
    static = StaticPoolSettings(model=MODEL, decode=(f"http://127.0.0.1:{free_port()}",))  # nobody there
    settings = RouterSettings(
        host="127.0.0.1", port=free_port(), notify_port=free_port(), static=static, api_keys_file=keys
    )
    headers = {"Authorization": "Bearer small-key"}
    body = {"model": MODEL, "prompt": "x" * 200, "max_tokens": 40}  # 50 + 40 tokens
    async with router_client(settings) as http:
        first = await http.post("/v1/completions", json=body, headers=headers)
        assert first.status_code != 429  # charged, then the engine is not there
        second = await http.post("/v1/completions", json=body, headers=headers)
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "rate_limit_exceeded"
    assert "limit 100 per hour" in second.json()["error"]["message"]
    assert int(second.headers["retry-after"]) > 0

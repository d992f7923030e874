"""Which ranks store LMCache PD KV, and so how many ProxyNotifs a request brings: every worker rank
for GQA/MHA models, only the first for MLA models (``save_only_first_rank`` defaults to ``use_mla``,
``lmcache/v1/token_database.py`` 114-120 and ``v1/cache_engine.py`` 424-426), whose keys then carry
world size 1 (``token_database.py`` 238-245)."""

from __future__ import annotations

import pytest
from lmcache_pair import Model, decode, lmcache_pair, metric, notification, prefill, tokens

from tandem.sim.lmcache_connector import Layout
from tandem.sim.settings import KVTransferConfig, LMCacheConfig, SimSettings

TP = 2


@pytest.mark.parametrize(
    ("model", "notifications", "used"),
    [
        (Model(tp=TP), 2, [2, 2]),
        (Model(tp=TP, use_mla=True), 1, [2, 0]),
        (Model(tp=TP, use_mla=True, extra_config={"save_only_first_rank": False}), 2, [2, 2]),
    ],
    ids=["gqa", "mla", "mla-every-rank"],
)
async def test_one_notification_per_storing_rank(model: Model, notifications: int, used: list[int]) -> None:
    async with lmcache_pair(4, model) as pair:
        prompt = await tokens(pair.decoder.client, 300, "ranks")
        answer = await prefill(pair, prompt, "ranks-1")
        for _ in range(notifications):
            assert await notification(pair.pull) == {"type": "ProxyNotif", "req_id": "ranks-1"}
        assert [rank["used"] for rank in (await pair.decoder.buffer())["ranks"]] == used
        await decode(pair.decoder, prompt, answer["kv_transfer_params"]["first_tok"])
        # The decode leg found the KV complete: every storing rank had sent, and no more will come.
        assert await metric(pair.decoder.client, "tandem_sim_kv_hits_total", connector="lmcache") == 1
        sent = await metric(pair.prefiller, "tandem_sim_proxy_notifications_total", outcome="sent")
        assert sent == notifications
        assert await pair.pull.poll(0) == 0


def test_mla_keys_name_world_size_one_and_the_first_rank() -> None:
    lmcache = LMCacheConfig(
        enable_pd=True, pd_role="sender", pd_proxy_host="h", pd_proxy_port=1, pd_buffer_size=1
    )
    config = KVTransferConfig(kv_connector="LMCacheConnectorV1", kv_role="kv_producer")
    settings = SimSettings(
        model="deepseek-ai/DeepSeek-V3",
        tensor_parallel_size=8,
        use_mla=True,
        kv_transfer_config=config,
        lmcache=lmcache,
    )
    layout = Layout.of(settings, lmcache)
    keys = layout.keys(list(range(300)), None)
    assert list(layout.storing_ranks) == [0]
    assert all(k.startswith("deepseek-ai/DeepSeek-V3@1@0@") for k in layout.rank_keys(keys, 0))
    gqa = Layout.of(settings.model_copy(update={"use_mla": False}), lmcache)
    assert gqa.rank_keys(keys, 3)[0].startswith("deepseek-ai/DeepSeek-V3@8@3@")

"""LMCache PD wire messages: msgpack of tagged msgspec structs, as in LMCache's
``lmcache/v1/storage_backend/pd_backend*.py`` (async mode) and ``transfer_channel/nixl_channel.py``.

The tag is the class name, so ``ProxyNotif(req_id="r1")`` encodes as
``{"type": "ProxyNotif", "req_id": "r1"}``. :class:`SimWriteDone` is the simulator's own: it
stands for the NIXL data-plane write, which in LMCache is a one-sided RDMA the decoder never sees.
"""

from __future__ import annotations

import msgspec


class PDMsgBase(msgspec.Struct, tag=True):
    """Base of the PD messages (tagged by class name)."""


class AllocRequest(PDMsgBase):
    keys: list[str]  # one per chunk
    fmt: int
    shape: list[int]  # of one full chunk
    dtype: str
    last_chunk_toks: int
    req_id: str = ""
    is_last_batch: bool = False
    total_chunks: int = 0


class AllocResponse(PDMsgBase):
    remote_indexes: list[int]  # one per key; -1: allocation failed
    already_sent_indexes: list[int] = msgspec.field(default_factory=list)


class ProxyNotif(PDMsgBase):
    req_id: str


class CancelNotif(PDMsgBase):
    req_id: str
    keys: list[str]


class SimWriteDone(PDMsgBase):
    req_id: str
    keys: list[str]
    num_bytes: int


class NixlInitRequest(PDMsgBase):
    local_meta_bytes: bytes


class NixlInitResponse(PDMsgBase):
    remote_agent_name: bytes
    remote_meta_bytes: bytes


AllocSideMsg = AllocRequest | AllocResponse | CancelNotif | SimWriteDone
InitSideMsg = NixlInitRequest | NixlInitResponse

KV_2LTD = 1  # LMCache MemoryFormat.KV_2LTD: [2, layers, tokens, hidden]
TOKEN_DIM = 2

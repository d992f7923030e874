"""tandem.sim: a vLLM-compatible engine without a GPU (``tandem sim``).

It speaks vLLM's OpenAI server API, metrics and KV-handoff protocols (LMCache PD and vLLM NIXL)
and models an engine's timing (``tandem.api.timing.EngineTiming``), so Tandem runs and is tested
without GPUs. Its answers are deterministic: the same prompt gets the same text on any instance,
aggregated or split across a prefill and a decode engine. docs/simulator.md is the user's guide.

Modules, from the core out:

- ``tokenizer``, ``chat_template``: a fixed vocabulary, identical in every process.
- ``generation``: what the model says, as a function of prompt tokens, position and seed.
- ``stopping``: vLLM's stop rules on the generated text.
- ``scheduler``: continuous batching, KV blocks, preemption, prefix caching, step cost (pure).
- ``engine``: the asyncio loop that runs the scheduler in modelled time; ``data_parallel``: a DP
  replica's engines behind one server, balanced as vLLM's internal DP load balancing does.
- ``connector``: the engine's seam to a KV handoff. LMCache PD: ``lmcache_connector`` (what both
  ends share), ``lmcache_sender``, ``lmcache_receiver``, ``pd_buffer`` (pure), ``pd_messages``.
  vLLM NIXL: ``nixl_connector``, ``nixl_leases`` (pure). ``zmq_rpc``: their request/reply sockets.
- ``openai_protocol``, ``openai_responses``, ``event_stream``, ``app``: the HTTP surface.
- ``faults``, ``metrics``, ``settings``: fault injection, Prometheus metrics, configuration.
- ``cli``, ``server``: ``tandem sim``; ``testing``: helpers for tests (in-process and processes).
"""

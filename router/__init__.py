"""The router: an OpenAI-compatible server that routes each request direct or as a prefill/decode
handoff (LMCache PD or vLLM NIXL) across a pool's engines. See docs/router.md.

Modules: `app` (ASGI app and lifespan), `asgi` (the few ASGI pieces), `dispatch` (a request's way
through admission, decision and execution), `decision/` (pure route choice), `connectors/`
(handoffs and KV notifications), `discovery/` (static and Kubernetes), `endpoints` and `monitor`
(endpoint state, scraping, health), `admission`, `metrics`, `settings`, `errors`, `client_request`,
`compose` and `sse` (request and answer formats), `cli`. Calls to engines, from the wire up:
`engine_http` (the lean HTTP/1.1 client: connections, timeouts, bodies), `upstream` (one engine
call, its failures as router errors), `direct_route` (the direct route: one engine serves the
client's request).
This package module imports none of them, so `tandem.router.decision` loads no HTTP library.
"""

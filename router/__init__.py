"""The router: an OpenAI-compatible server that routes each request direct or as a prefill/decode
handoff (LMCache PD or vLLM NIXL) across a pool's engines. See docs/router.md.

Modules: `app` (ASGI app and lifespan), `asgi` (the few ASGI pieces), `dispatch` (a request's way
through admission, decision and execution), `decision/` (pure route choice), `connectors/`
(handoffs and KV notifications), `discovery/` (static and Kubernetes), `endpoints` and `monitor`
(endpoint state, scraping, health), `admission`, `metrics`, `settings`, `errors`, `client_request`,
`compose` and `sse` (request and answer formats), `upstream` and `proxy` (engine calls), `cli`.
This package module imports none of them, so `tandem.router.decision` loads no HTTP library.
"""

"""Operating a member: Prometheus metrics, health endpoints over HTTP, structured logs.

This package owns how an operator watches a running member: ``metrics`` turns the
plain counters, status values and observer hooks of the raft, mesh and kv layers into
Prometheus metrics (prometheus-client), ``http`` serves ``/metrics``, ``/health``,
``/livez`` and ``/readyz`` (aiohttp), ``logformat`` writes log records as text or JSON
lines that all name the member. It sits above every layer (the composition root,
``meshraft.member``, wires it) and no layer imports it: raft, mesh and kv never know
a metrics library exists (docs/architecture.md#operations).
"""

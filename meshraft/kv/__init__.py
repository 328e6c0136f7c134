"""The key-value service: a linearizable, replicated key-value store on a Raft node.

What the package offers (import it from here)::

    from meshraft.kv import Client            # blocking client (scripts)
    from meshraft.kv import AsyncClient       # asyncio client (applications)

    with Client("127.0.0.1:2379,127.0.0.1:2381") as c:
        c.put("greeting", "hello")
        c.get("greeting").value               # b"hello"; None if absent

- ``Client`` / ``AsyncClient``: put, get, delete, cas, list, status, members and
  membership changes, with retries across endpoints and exactly-once writes;
  results are ``KeyValue``, ``PutResult``, ``DeleteResult``, ``CasResult``.
- Errors, all ``MeshraftError`` with a protocol ``code``: ``BadRequest``
  (``TooLarge``), ``Unauthorized``, ``TLSFailure``, ``Unavailable`` (``Busy``:
  certainly not applied), ``OutcomeUnknown`` (a write that may or may not apply),
  ``ProtocolViolation``.
- ``client.watch(key, prefix=..., start_revision=...)``: a ``Watch`` yielding
  ``WatchEvent`` s (``for`` on ``Client``, ``async for`` on ``AsyncClient``), which
  resumes on another member by itself; ``Compacted`` when the history it needs is gone.
- ``KVServer``: the client protocol in front of a ``meshraft.raft.node.RaftNode``;
  ``KVStateMachine`` (with ``Limits``): the replicated state it serves.

Modules: ``state_machine`` (the replicated state), ``protocol`` (the wire format
and error codes), ``server``, ``client``, ``retry`` (the client's retry policy),
``errors``, ``tls``. kv builds on ``meshraft.raft.node``'s public API only and
knows nothing of the mesh or the CLI. Names are imported on first use, so
importing one module of the package does not load the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshraft.lazy import lazy_exports

__all__ = [
    "AsyncClient", "BadRequest", "Busy", "CasResult", "Client", "Compacted", "DeleteResult",
    "FutureRevision", "KVServer",
    "KVStateMachine", "KeyValue", "Limits", "MeshraftError", "OutcomeUnknown",
    "ProtocolViolation", "PutResult", "TLSFailure", "TooLarge", "Unauthorized", "Unavailable",
    "WatchEvent",
]

_HOME = {
    **dict.fromkeys(["AsyncClient", "CasResult", "Client", "DeleteResult", "KeyValue",
                     "PutResult"], "meshraft.kv.client"),
    **dict.fromkeys(["BadRequest", "Busy", "Compacted", "FutureRevision", "MeshraftError",
                     "OutcomeUnknown",
                     "ProtocolViolation", "TLSFailure", "TooLarge", "Unauthorized",
                     "Unavailable"], "meshraft.kv.errors"),
    "KVServer": "meshraft.kv.server",
    "WatchEvent": "meshraft.kv.watch_client",
    **dict.fromkeys(["KVStateMachine", "Limits"], "meshraft.kv.state_machine"),
}

if TYPE_CHECKING:
    from meshraft.kv.client import (
        AsyncClient,
        CasResult,
        Client,
        DeleteResult,
        KeyValue,
        PutResult,
    )
    from meshraft.kv.errors import (
        BadRequest,
        Busy,
        Compacted,
        FutureRevision,
        MeshraftError,
        OutcomeUnknown,
        ProtocolViolation,
        TLSFailure,
        TooLarge,
        Unauthorized,
        Unavailable,
    )
    from meshraft.kv.server import KVServer
    from meshraft.kv.state_machine import KVStateMachine, Limits
    from meshraft.kv.watch_client import WatchEvent


__getattr__, __dir__ = lazy_exports(__name__, _HOME)

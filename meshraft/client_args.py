"""Client TLS and token arguments from command-line values.

Owns turning ``--cacert/--cert/--key/--token-file`` (and ``MESHRAFT_TOKEN``) into the
``ssl`` and ``token`` keyword arguments of :class:`meshraft.kv.client.AsyncClient`, for
``meshraft``'s client commands and ``meshraft bench`` alike. It never talks to a
server and never exits the process: a bad combination is a ValueError whose message
is meant for the user.
"""

from __future__ import annotations

import os
from typing import Any

from meshraft.kv.tls import client_context, read_token_file


def client_security_kwargs(cacert: str | None, cert: str | None, key: str | None,
                           token_file: str | None) -> dict[str, Any]:
    """``ssl`` when any TLS file is given, ``token`` from the file or MESHRAFT_TOKEN."""
    out: dict[str, Any] = {}
    if cacert or cert or key:
        if (cert is None) != (key is None):
            raise ValueError("--cert and --key go together")
        try:
            out["ssl"] = client_context(cacert, cert, key)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ValueError(f"cannot use the TLS files: {exc}") from None
    if token_file:
        try:
            out["token"] = read_token_file(token_file)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--token-file: {exc}") from None
    elif os.environ.get("MESHRAFT_TOKEN"):
        out["token"] = os.environ["MESHRAFT_TOKEN"].encode("utf-8", "surrogateescape")
    return out

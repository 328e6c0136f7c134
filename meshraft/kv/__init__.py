"""The key-value service: the replicated state machine (``state_machine``), the
client protocol (``protocol``), the TCP server in front of a Raft node
(``server``) and the Python client (``client``).

kv builds on ``meshraft.raft.node``'s public API only and knows nothing of the
mesh or the CLI."""

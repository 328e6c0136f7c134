"""Raft: a sans-IO core (``core``), its data types (``messages``), durable storage
(``storage``) and an asyncio driver (``node``). Nothing here knows about the mesh
or the key-value store: the node talks to any asyncio datagram transport and
applies entries to any object with ``apply``/``snapshot``/``restore``."""

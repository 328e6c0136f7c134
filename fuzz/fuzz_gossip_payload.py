"""atheris harness: gossip payloads (the example counters' CRDT decoders and
topology records).

    pip install -e '.[fuzz]'
    python fuzz/fuzz_gossip_payload.py -atheris_runs=100000

Decoders raise only ValueError; a topology never lets a record replace our own."""

from __future__ import annotations

import _harness

with _harness.instrumented():
    from meshraft.mesh.connection import make_unpackb
    from meshraft.mesh.crdt import GCounter, PNCounter
    from meshraft.mesh.peer import PeerRecord
    from meshraft.mesh.topology import Topology

unpackb = make_unpackb(1 << 20)  # the mesh's own frame decoder, limits included


def test_one_input(data: bytes) -> None:
    for kind in (GCounter, PNCounter):
        try:
            c = kind.decode(data)
        except ValueError:
            continue
        assert kind.decode(c.encode()[0]) == c
    try:
        obj = unpackb(data)
    except Exception:  # msgpack's own errors: the link would be closed
        return
    topo = Topology(PeerRecord("self", 7, 1, 1, "127.0.0.1", 1, {}))
    records = []
    for item in obj if isinstance(obj, list) else [obj]:
        try:
            records.append(PeerRecord.decode(item))
        except ValueError:
            pass
    topo.merge(records)
    assert topo.peers["self"].uid == 7


if __name__ == "__main__":
    _harness.main(test_one_input)

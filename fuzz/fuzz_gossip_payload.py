"""atheris harness: gossip payloads (the example counters' CRDT decoders, from
cmd/crdt_counter.py, and topology records).

    pip install -e '.[fuzz]'
    python fuzz/fuzz_gossip_payload.py -atheris_runs=100000

Decoders raise only ValueError; a topology never lets a record replace our own."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import _harness


def _load_example(name: str):  # cmd/ is not a package (it would shadow stdlib's cmd)
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[1] / "cmd" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


with _harness.instrumented():
    from meshraft.mesh.peer import PeerRecord
    from meshraft.mesh.topology import Topology
    from meshraft.mesh.wire import make_unpackb

    crdt_counter = _load_example("crdt_counter")
    GCounter, PNCounter = crdt_counter.GCounter, crdt_counter.PNCounter

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

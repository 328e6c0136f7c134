"""atheris harness: the kv state machine's command and snapshot decoders.

    pip install -e '.[fuzz]'
    python fuzz/fuzz_kv_command.py -atheris_runs=100000

A bad command is an error answer that changes nothing; a bad snapshot raises
ValueError (or TypeError/KeyError) and changes nothing."""

from __future__ import annotations

import _harness

with _harness.instrumented():
    from meshraft.kv.state_machine import KVStateMachine, encode_command


def view(sm: KVStateMachine) -> tuple:
    return sm.revision, [(kv.key, kv.value) for kv in sm.list(b"")]


def test_one_input(data: bytes) -> None:
    sm = KVStateMachine()
    sm.apply_command(encode_command({"op": "put", "key": b"a", "value": b"1"}))
    before = view(sm)
    result = sm.apply_command(data)
    assert isinstance(result, dict)
    if "error" in result:
        assert view(sm) == before
    before = view(sm)
    try:
        sm.restore(data)
    except (ValueError, TypeError, KeyError):
        assert view(sm) == before


if __name__ == "__main__":
    _harness.main(test_one_input)

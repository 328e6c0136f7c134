"""atheris harness: raft's message and conf-change decoders.

    pip install -e '.[fuzz]'
    python fuzz/fuzz_raft_message.py -atheris_runs=100000

Whatever the bytes, decode_message and ConfChange.decode return a value or raise
DecodeError; what decodes re-encodes to the same value."""

from __future__ import annotations

import _harness

with _harness.instrumented():
    from meshraft.raft.messages import ConfChange, DecodeError, decode_message, encode_message


def test_one_input(data: bytes) -> None:
    try:
        m = decode_message(data)
    except DecodeError:
        pass
    else:
        assert decode_message(encode_message(m)) == m
    try:
        cc = ConfChange.decode(data)
    except DecodeError:
        pass
    else:
        assert ConfChange.decode(cc.encode()) == cc


if __name__ == "__main__":
    _harness.main(test_one_input)

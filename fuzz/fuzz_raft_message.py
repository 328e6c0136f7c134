"""atheris harness: raft's decoders of network and disk input (messages, conf
changes, snapshot envelopes, membership change contexts, removal notices).

    pip install -e '.[fuzz]'
    python fuzz/fuzz_raft_message.py -atheris_runs=100000

Whatever the bytes, decode_message and ConfChange.decode return a value or raise
DecodeError, the others a value or ValueError; what decodes re-encodes to the same
value."""

from __future__ import annotations

import _harness

with _harness.instrumented():
    from meshraft.raft.envelope import (
        decode_member_context,
        decode_snapshot_envelope_full,
        encode_member_context,
        encode_snapshot_envelope,
    )
    from meshraft.raft.messages import ConfChange, DecodeError, decode_message, encode_message
    from meshraft.raft.notices import decode_removed_notice, encode_removed_notice


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
    try:
        env = decode_snapshot_envelope_full(data)
    except ValueError:
        pass
    else:
        assert decode_snapshot_envelope_full(encode_snapshot_envelope(*env)) == env
    try:
        ctx = decode_member_context(data)
    except ValueError:
        pass
    else:
        assert decode_member_context(encode_member_context(*ctx)) == ctx
    try:
        notice = decode_removed_notice(data)
    except ValueError:
        pass
    else:
        assert decode_removed_notice(encode_removed_notice(notice)) == notice


if __name__ == "__main__":
    _harness.main(test_one_input)

"""Test support for the Raft layer (as etcd keeps ``raft/rafttest``): not used by a
running member.

- ``scenario``: deterministic, scripted clusters of cores (``Cluster``) and the
  scenario-file runner (``python -m meshraft.raft.rafttest.scenario FILE...``).
- ``sim``: the seeded whole-cluster simulator with the Raft safety checkers
  (``python -m meshraft.raft.rafttest.sim --seeds N --checker MODULE:FUNCTION``). It is
  handed its linearizability checker; it never imports one.

This package must never be imported by ``meshraft.raft`` itself (only tests,
fuzzers and developers use it), and never import anything outside ``meshraft.raft``.
"""

"""`meshraft serve --max-key-bytes/--max-value-bytes`: a member's own admission
limits, from the command line, with the same clear errors as the defaults."""

from __future__ import annotations

from conftest import free_ports, wait_until


def test_serve_limits_are_configurable_from_the_command_line(procs):
    peer, client = free_ports(2)
    ep = f"127.0.0.1:{client}"
    procs.start("serve", "--id", "1", "--peers", f"1=127.0.0.1:{peer}", "--client", ep,
                "--data-dir", str(procs.tmpdir("n1")), "--transport", "udp",
                "--max-key-bytes", "8", "--max-value-bytes", "4096", name="node1")
    wait_until(lambda: procs.run("put", "k", "v", "--endpoints", ep).returncode == 0,
               timeout=30, what="the member to accept a write")

    r = procs.run("put", "123456789", "v", "--endpoints", ep)
    assert r.returncode == 2 and "key is 9 bytes, the limit is 8" in r.stderr, r.stderr
    r = procs.run("put", "big", "--endpoints", ep, input="x" * 4097)
    assert r.returncode == 2 and "value is 4097 bytes, the limit is 4096" in r.stderr
    r = procs.run("put", "12345678", "--endpoints", ep, input="x" * 4096)
    assert r.returncode == 0, r.stderr  # exactly the limits
    r = procs.run("get", "k", "--endpoints", ep)
    assert r.returncode == 0 and r.stdout == "v\n"  # nothing else changed

    # out of range: a usage error naming the flag, before anything starts
    for flag, value in (("--max-key-bytes", "0"), ("--max-value-bytes", str(64 << 20))):
        r = procs.run("serve", "--id", "1", "--peers", f"1=127.0.0.1:{peer}", flag, value)
        assert r.returncode == 2 and flag in r.stderr, r.stderr

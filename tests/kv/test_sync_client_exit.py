"""A script that uses the blocking Client and forgets to close it must still exit:
the client's loop thread is a daemon, and closing at interpreter exit must not wait
on a loop that is no longer running."""

import subprocess
import sys

from conftest import free_port


def test_program_with_an_unclosed_client_exits():
    port = free_port()
    script = (
        "from meshraft.kv.client import Client, Unavailable\n"
        f"c = Client('127.0.0.1:{port}', timeout=0.5)\n"
        "try:\n"
        "    c.get('k')\n"
        "except Unavailable:\n"
        "    print('unavailable')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "unavailable" in out.stdout

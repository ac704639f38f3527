"""Process helpers of `evtime services`: when a stopped service is really gone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from evtime.services.processes import is_alive, port_taken

# The main thread exits (pthread_exit) while another thread still holds a listening
# socket, as a JVM's first thread can while its other threads finish shutting down.
_LEADER_EXITS_FIRST = """
import ctypes, socket, sys, threading, time
sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen()
print(sock.getsockname()[1], flush=True)
threading.Thread(target=time.sleep, args=(600,), daemon=False).start()
time.sleep(0.2)
ctypes.CDLL(None).pthread_exit(None)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_process_whose_first_thread_exited_is_alive_while_its_threads_run() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _LEADER_EXITS_FIRST], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the leader is a zombie
            stat = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
            if stat == "Z":
                break
            time.sleep(0.05)
        assert stat == "Z"
        assert is_alive(proc.pid)
        assert port_taken(port)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not is_alive(proc.pid)
    assert not port_taken(port)


def test_a_free_port_is_not_taken() -> None:
    assert not port_taken(_free_port())

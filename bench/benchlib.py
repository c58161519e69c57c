"""Process helpers shared by the benchmark scripts (`bench/run`, `bench/w3-hops`,
`bench/scale-floor`): where the release binaries are, free loopback ports, waiting for a
server to listen, and stopping it."""

import os
import signal
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "bench", "peers")


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")


def bin_path(name):
    """A release binary of the workspace (`cargo build --release -p signalr-bench --bins`)."""
    return os.path.join(target_dir(), "release", name)


def sx_bin():
    """The socketioxide peer, built from its own manifest outside the workspace."""
    env_dir = os.environ.get("CARGO_TARGET_DIR")
    base = env_dir if env_dir else os.path.join(PEERS, "socketioxide", "target")
    return os.path.join(base, "release", "sxserver")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, limit=20.0):
    """Returns once something accepts on `port`; raises if `proc` exits first or `limit`
    seconds pass."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited early with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {limit} s")


def stop(proc, limit=10.0):
    """SIGTERM, then SIGKILL if `proc` is still running after `limit` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=limit)

"""Servers the tests start on loopback: a free port, and a real local Ray cluster (``ray start --head``), always stopped."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def processes_mentioning(text: str) -> list[int]:
    """The ids of this machine's processes whose command line holds ``text`` (Linux: /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text.encode() in cmdline.read_bytes() and int(cmdline.parent.name) != os.getpid():
                found.append(int(cmdline.parent.name))
    return found


class RayCluster(NamedTuple):
    address: str  # host:port of its head (GCS)
    env: dict[str, str]  # the environment a driver connects with: RAY_ADDRESS and the cluster's token
    temp_dir: Path  # its sessions and logs; every one of its processes names it


@contextlib.contextmanager
def ray_cluster(cpus: int = 2) -> Iterator[RayCluster]:
    """A Ray head node on 127.0.0.1 with ``cpus`` CPUs, no dashboard, its sessions and logs in a temp dir of its own,
    token authentication on (a token of its own, no ~/.ray/auth_token). Stopped by ending its own processes only: its
    process group (``ray start`` runs in a session of its own, which the processes it starts inherit), then any process
    naming its temp dir. ``ray stop`` is not used: it ends every Ray process of the user on the machine, by name."""
    temp = Path(tempfile.mkdtemp(prefix="ray-"))  # short: Ray's socket paths must fit in 107 characters
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
    # a one-node cluster: Ray then takes loopback as the node's address everywhere (it would otherwise replace 127.0.0.1
    # by the address of the machine's network interface, for other nodes to reach)
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env.pop("RAY_ADDRESS", None)
    ray = str(Path(sys.executable).with_name("ray"))  # the console script beside this interpreter
    # every port it listens on is a free one of loopback's (the defaults, 6379 and 10001, may be taken)
    command = [
        ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={cpus}", "--num-gpus=0",
        "--include-dashboard=false", f"--ray-client-server-port={free_port()}", f"--temp-dir={temp}", "--disable-usage-stats",
    ]  # fmt: skip
    pipe = subprocess.PIPE
    start = subprocess.Popen(command, env=env, stdout=pipe, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = start.communicate(timeout=180)
        if start.returncode != 0:
            raise RuntimeError(f"ray start exited {start.returncode}:\n{output[-3000:]}")
        address = f"127.0.0.1:{port}"
        yield RayCluster(address, {**env, "RAY_ADDRESS": address}, temp)
    finally:
        _end_group(start.pid)
        for pid in processes_mentioning(str(temp)):  # a process that left the group
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def _end_group(group: int, grace_s: float = 5.0) -> None:
    """SIGTERM to the process group ``group``, SIGKILL to whatever is left after ``grace_s`` (Ray's GCS server and
    raylet take 10 s and more to stop on SIGTERM; a test cluster has nothing to save)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            os.killpg(group, 0)  # ProcessLookupError once the group is empty
            time.sleep(0.2)
        os.killpg(group, signal.SIGKILL)

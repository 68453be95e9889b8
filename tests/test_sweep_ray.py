"""``groklab sweep --backend ray`` against a two-CPU Ray instance that the test starts.

The instance runs in a child process in its own session and temp folder, on
the loopback interface, and is shut down (then killed if need be) before the
test ends. The sweep itself runs as a subprocess, so Ray's warnings and
threads never reach the pytest process.
"""

import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from groklab.cli import main

SWEEP = [
    "sweep", "--task", "modadd", "--grid", "alpha=0.3,3", "--seeds", "0",
    "--set", "p=13", "--set", "hidden=16", "--set", "epochs=6",
    "--set", "checkpoint_every=1",
    "--analysis-set", "fisher_inputs=24", "--analysis-set", "geometry_fisher_inputs=8",
    "--analysis-set", "n_fractions=21", "--analysis-set", "max_checkpoints=5",
    "--max-members", "1", "--quiet",
]

# Starts a local Ray instance with two CPUs, prints its address and keeps it up
# until standard input closes.
HEAD = """
import sys
import ray

ray.init(num_cpus=2, include_dashboard=False, _temp_dir=sys.argv[1])
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""

RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # Token authentication would need a token file shared by head and driver.
    "RAY_AUTH_MODE": "disabled",
    # Makes Ray use 127.0.0.1 as the node address instead of a network interface
    # (ray 2.60, ray._private.services.get_node_ip_address).
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def read_line(process: subprocess.Popen, timeout: float) -> str:
    """Return the first line of the process's stdout, or '' after ``timeout`` seconds."""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return process.stdout.readline().strip()


def processes_mentioning(text: str) -> list[int]:
    """Return the ids of live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def stop_head(head: subprocess.Popen, temp: str) -> None:
    """Shut the instance down through its driver; kill its session if that fails."""
    head.stdin.close()
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)  # the head's own session: only our processes
        head.wait()
    head.stdout.close()
    deadline = time.monotonic() + 30
    while processes_mentioning(temp) and time.monotonic() < deadline:
        time.sleep(0.5)


def test_ray_table_equals_local(tmp_path):
    local = tmp_path / "local"
    assert main([*SWEEP, "--out", str(local), "--workers", "2"]) == 0

    # Ray's socket paths must stay below 108 bytes, so the temp folder is short.
    temp = tempfile.mkdtemp(prefix="glray-", dir="/tmp")
    env = {**os.environ, **RAY_ENV}
    head = subprocess.Popen(
        [sys.executable, "-c", HEAD, temp], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        start_new_session=True,
    )
    try:
        address = read_line(head, timeout=120)
        assert address.startswith("127.0.0.1:"), address
        out = tmp_path / "ray"
        result = subprocess.run(
            [sys.executable, "-m", "groklab", *SWEEP, "--out", str(out),
             "--backend", "ray", "--address", address],
            capture_output=True, text=True, env=env, timeout=600,
        )
        assert result.returncode == 0, result.stderr
    finally:
        stop_head(head, temp)
        leftover = processes_mentioning(temp)
        shutil.rmtree(temp, ignore_errors=True)

    assert head.returncode == 0
    assert leftover == []
    assert (out / "results.csv").read_bytes() == (local / "results.csv").read_bytes()
    record = (out / "sweep.json").read_text()
    assert '"backend": "ray"' in record
    assert (out / "figures" / "sweep_alpha.png").is_file()


def test_ray_closed_port_one_line_error(tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "sweep"
    code = main([*SWEEP, "--out", str(out), "--backend", "ray",
                 "--address", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot connect to Ray at 127.0.0.1:{port}" in err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()

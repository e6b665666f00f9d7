"""No network at run time: the demo path runs end to end with every outbound connection refused."""

import os
import subprocess
import sys
import textwrap

REFUSE_NETWORK = textwrap.dedent("""
    import socket

    _connect = socket.socket.connect

    def _refuse(self, address, *args, **kwargs):
        if self.family == socket.AF_UNIX:  # local IPC (multiprocessing) is not the network
            return _connect(self, address, *args, **kwargs)
        raise ConnectionRefusedError(f"network access attempted: {address}")

    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
""")


def offline_env(tmp_path) -> dict:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(REFUSE_NETWORK)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join([str(hooks), env.get("PYTHONPATH", "")]))
    return env


def test_outbound_connections_are_really_refused(tmp_path):
    probe = subprocess.run(
        [sys.executable, "-c", "import urllib.request; urllib.request.urlopen('http://1.1.1.1', timeout=5)"],
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert probe.returncode != 0 and "network access attempted" in probe.stderr


def test_the_demo_runs_with_the_network_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "meap.cli", "demo", "--quick", "--no-progress", "--output", str(tmp_path / "demo")],
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "network access attempted" not in result.stderr
    assert (tmp_path / "demo" / "comparison.md").is_file() and (tmp_path / "demo" / "comparison.png").is_file()

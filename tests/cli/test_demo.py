"""``make run`` (``wardgate demo``): the requests it tells a new user to try do what their
comments say, on the real demo upstream and ``examples/demo/policy.yaml``."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, wardgate_env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(shutil.which("curl") is None, reason="the demo's instructions use curl")
def test_every_suggested_request_gets_the_status_its_comment_promises():
    listen, admin = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    demo = subprocess.Popen(
        [sys.executable, "-m", "wardgate", "demo", "--listen", listen, "--admin", admin],
        env=wardgate_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while not any("Stop with Ctrl-C" in line for line in lines):
            assert time.monotonic() < deadline and demo.poll() is None, "\n".join(lines)
            lines.append(demo.stderr.readline())
        tries = [
            line.strip()
            for line in lines
            if line.strip().startswith("curl -i") and re.search(r"# (allowed|blocked)", line)
        ]
        assert len(tries) >= 4 and any("blocked: 403" in t for t in tries)
        # The banner is printed just before the listener opens: wait for it.
        base = f"http://{listen}/echo"
        deadline = time.monotonic() + 30
        while subprocess.run(["curl", "-s", "-o", "/dev/null", base], check=False).returncode:
            assert time.monotonic() < deadline and demo.poll() is None
            time.sleep(0.1)
        for line in tries:
            command, _, comment = line.partition("#")
            expected = (
                200
                if comment.strip().startswith("allowed")
                else int(
                    re.search(r"blocked: (\d{3})", comment).group(1)  # type: ignore[union-attr]
                )
            )
            probe = command.replace("curl -i", "curl -s -o /dev/null -w '%{http_code}'", 1)
            status = subprocess.run(
                ["bash", "-c", probe], capture_output=True, text=True, timeout=30, check=False
            ).stdout
            assert status == str(expected), f"{line} -> {status}"
    finally:
        demo.terminate()
        demo.wait(20)
        demo.stderr.close()

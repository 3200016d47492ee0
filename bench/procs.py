"""Server processes started by the benchmark, and only those, stopped at the end.

Servers are pinned to CPU 0 and the load generator to CPU 1 when `taskset`
exists and both CPUs are available to us, so each side has a core of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from bench import ROOT
from bench.loadgen import fetch

SERVER_CPU = 0
LOADGEN_CPU = 1
STOP_TIMEOUT = 5.0
READY_TIMEOUT = 30.0


def can_pin() -> bool:
    """True when the servers and the generator can each have a CPU."""
    cpus = os.sched_getaffinity(0)
    return shutil.which("taskset") is not None and {SERVER_CPU, LOADGEN_CPU} <= cpus


def free_port() -> int:
    """A port nobody listens on now (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the ")" closing comm, utime and stime are fields 12 and 13 (0-based: state is 0).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """One server process: its PID, port and log file."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, path: str) -> None:
        """Poll GET `path` until it answers 200; fail if the process exits or time runs out."""
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                status, _ = fetch("127.0.0.1", self.port, request, timeout=1.0)
                if status == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate, then kill after a timeout; this PID only."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)


class Servers:
    """Starts servers and stops every one it started on exit, errors included."""

    def __init__(self, logdir: Path, pin: bool) -> None:
        self.logdir = logdir
        self.pin = pin
        self.started: list[Server] = []

    def start(
        self,
        name: str,
        args: list[str],
        port: int,
        env: dict[str, str] | None = None,
        cpu: int = SERVER_CPU,
    ) -> Server:
        """Start `python <args>`, pinned to `cpu` when pinning."""
        prefix = ["taskset", "-c", str(cpu)] if self.pin else []
        log = self.logdir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*prefix, sys.executable, *args],
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = Server(name, proc, port, log)
        self.started.append(server)
        return server

    def gateway(self, name: str, config: Path, port: int, ready: str = "/readyz") -> Server:
        """`python -m gateway serve` with this config, once `ready` answers 200."""
        args = ["-m", "gateway", "serve", "--config", str(config), "--port", str(port)]
        server = self.start(name, args, port)
        server.wait_ready(ready)
        return server

    def __enter__(self) -> Servers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for server in self.started:
            server.stop()

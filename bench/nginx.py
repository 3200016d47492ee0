"""A throwaway nginx on 127.0.0.1, for tests and benchmarks.

    with run_nginx("location = /ok { return 200 'ok'; }") as nginx:
        ...  # nginx.port, nginx.url("/ok")

Rules of this file:
- Everything nginx writes (pid file, error log, temp paths) lives under a
  temporary prefix; no file outside it is touched and no system nginx is used
  as a service. The config is ours, not /etc/nginx's.
- The caller supplies the body of the one `server {}` (locations, root) and,
  separately, any `http {}`-level directives (upstream blocks for a
  keep-alive reverse proxy, keepalive_timeout); the helper adds the `listen`
  on 127.0.0.1 and a free port.
- nginx runs in the foreground (`daemon off`), by default as one process
  (`master_process off`). Exactly the PID started here is stopped (SIGTERM,
  then SIGKILL after a timeout); with a master process, its workers exit with it.
- No nginx and no way to install it is an error, not a skip: CI must run the
  tests that need it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
# Debian installs it here, which is not on every user's PATH.
_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


def ensure_nginx() -> str:
    """The nginx binary's path; installs Debian's nginx-light first if root with apt-get."""
    found = _find()
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            "apt-get update -qq && apt-get install -y -qq nginx-light",
            shell=True,
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            stdout=subprocess.DEVNULL,
        )
        found = _find()
        if found:
            return found
    raise RuntimeError(
        "nginx is required (tests and benchmarks run it on 127.0.0.1) and was not found; "
        "install it, e.g. `apt-get install nginx-light` as root"
    )


def _find() -> str | None:
    on_path = shutil.which("nginx")
    if on_path:
        return on_path
    return next((p for p in _CANDIDATES if os.access(p, os.X_OK)), None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Nginx:
    """A running nginx: its port, prefix directory and process."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, prefix: Path) -> None:
        self.proc = proc
        self.port = port
        self.prefix = prefix

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.error_log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        return f"Nginx(pid={self.pid}, port={self.port}, {state})"


def render_config(
    prefix: Path, port: int, server_body: str, http_body: str, master_process: bool
) -> str:
    """The whole nginx.conf: our paths and defaults around the caller's directives."""
    temp = prefix / "temp"
    # Workers of a root master would run as nobody, who cannot read a test's tmp dir.
    user = "user root;\n" if master_process and os.geteuid() == 0 else ""
    return f"""\
daemon off;
master_process {"on" if master_process else "off"};
worker_processes 1;
{user}pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nodelay on;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{http_body}
    server {{
        listen 127.0.0.1:{port};
{server_body}
    }}
}}
"""


def keepalive_proxy(upstream_port: int, keepalive: int) -> tuple[str, str]:
    """(http_body, server_body) proxying every request to 127.0.0.1:`upstream_port`.

    Keep-alive without a request limit on both sides, as the gateway's pool does.
    """
    http_body = (
        f"    upstream bot {{ server 127.0.0.1:{upstream_port}; keepalive {keepalive};"
        " keepalive_requests 100000000; }\n"
        "    keepalive_requests 100000000;\n"
    )
    server_body = (
        "        location / {\n"
        "            proxy_pass http://bot;\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n'
        "        }\n"
    )
    return http_body, server_body


@contextmanager
def run_nginx(
    server_body: str,
    *,
    http_body: str = "",
    port: int | None = None,
    master_process: bool = False,
    cpu: int | None = None,
) -> Iterator[Nginx]:
    """Start nginx with this config, wait until its port accepts, stop it on exit.

    `cpu` pins it with taskset (benchmarks). The prefix is deleted afterwards.
    """
    binary = ensure_nginx()
    port = port or _free_port()
    with tempfile.TemporaryDirectory(prefix="nginx-") as tmp:
        prefix = Path(tmp)
        (prefix / "temp").mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(
            render_config(prefix, port, server_body, http_body, master_process), encoding="utf-8"
        )
        taskset = ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []
        with (prefix / "stderr.log").open("wb") as out:
            proc = subprocess.Popen(
                [
                    *taskset,
                    binary,
                    "-p",
                    str(prefix),
                    "-c",
                    str(conf),
                    "-e",
                    str(prefix / "error.log"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        nginx = Nginx(proc, port, prefix)
        try:
            _wait_ready(nginx)
            yield nginx
        finally:
            _stop(proc)


def _wait_ready(nginx: Nginx) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if nginx.proc.poll() is not None:
            stderr = (nginx.prefix / "stderr.log").read_text(errors="replace")
            raise RuntimeError(
                f"nginx exited with {nginx.proc.returncode}:\n{stderr}{nginx.log_tail()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", nginx.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nginx not accepting on {nginx.port} after {READY_TIMEOUT:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (nginx's fast shutdown), then SIGKILL; this PID only."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)

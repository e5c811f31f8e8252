"""Child-process plumbing for the harness servers: free ports, scratch directories, spawning a
server in its own process group with its output in a log file, and killing every server that is
still running when the interpreter exits (also on a failed test or an uncaught error).

Belt and braces against leaked servers:
- every server runs in its own session/process group, and stopping it signals the whole group;
- an atexit hook stops whatever is still running and removes the scratch directory;
- on Linux, a server started from the main thread gets a parent-death signal, so it dies even
  when pytest itself is SIGKILLed or leaves through os._exit (atexit does not run then).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "HOST",
    "ServerProcess",
    "ServerStartError",
    "free_port",
    "log_tail",
    "run_tool",
    "scratch_dir",
    "tcp_open",
    "wait_until",
]

KEEP_DIRS_ENV = "FINMESH_KEEP_SERVER_DIRS"
_ROOT_PREFIX = "finmesh-harness-"


class ServerStartError(RuntimeError):
    """A harness server could not be started; the message carries the reason and its log tail."""


def log_tail(path: Path | str, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or a note that there is none."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    text = data.decode("utf-8", "replace").splitlines()[-lines:]
    return "\n".join(text) if text else f"<{path} is empty>"


HOST = "127.0.0.1"
_SETPRIV = shutil.which("setpriv")


def tcp_open(port: int, timeout: float = 0.5, host: str = HOST) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def run_tool(argv: list[str], *, what: str, timeout: float, **kwargs: Any) -> str:
    """Run a short helper command to completion; raise ServerStartError with its output if it fails."""
    user = kwargs.get("user")
    if user and _SETPRIV is not None:
        # As ServerProcess does, and for the same reason (see _spawn_prefix): no fork() in Python.
        for name in ("user", "group", "extra_groups"):
            kwargs.pop(name, None)
        import pwd

        entry = pwd.getpwnam(user)
        argv = [_SETPRIV, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--", *argv]
    try:
        done: subprocess.CompletedProcess[bytes] = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
            **kwargs,
        )
    except subprocess.TimeoutExpired as exc:
        partial = (exc.stdout or b"").decode("utf-8", "replace")[-4000:]
        raise ServerStartError(f"{what}: timed out after {timeout:.0f}s\n{partial}") from exc
    except OSError as exc:
        raise ServerStartError(f"{what}: cannot run {argv[0]}: {exc}") from exc
    out: str = done.stdout.decode("utf-8", "replace")
    if done.returncode != 0:
        raise ServerStartError(f"{what}: exit code {done.returncode}\n{out[-4000:]}")
    return out


# --------------------------------------------------------------------------------------------
# Ports

_issued_ports: set[int] = set()
_port_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` now and that this process has not handed out before."""
    with _port_lock:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _issued_ports:
                _issued_ports.add(port)
                return port
    raise ServerStartError("could not find a free TCP port on " + host)


# --------------------------------------------------------------------------------------------
# Scratch directories

_root_lock = threading.Lock()
_root: Path | None = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale_roots(parent: Path) -> None:
    """Remove scratch roots left by harness processes that died without cleaning up."""
    for entry in parent.glob(_ROOT_PREFIX + "*"):
        try:
            pid = int(entry.name[len(_ROOT_PREFIX) :].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(entry, ignore_errors=True)


def _harness_root() -> Path:
    global _root
    with _root_lock:
        if _root is None:
            parent = Path(os.environ.get("FINMESH_HARNESS_TMP") or tempfile.gettempdir())
            parent.mkdir(parents=True, exist_ok=True)
            if not os.environ.get(KEEP_DIRS_ENV):
                _sweep_stale_roots(parent)
            _root = Path(tempfile.mkdtemp(prefix=f"{_ROOT_PREFIX}{os.getpid()}-", dir=parent))
            # Traversable by the unprivileged user PostgreSQL runs as when we are root.
            _root.chmod(0o755)
        return _root


def scratch_dir(name: str) -> Path:
    """A fresh directory for one server, under this process's harness root."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_harness_root()))


# --------------------------------------------------------------------------------------------
# Processes

_PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

_live: set[ServerProcess] = set()
_live_lock = threading.Lock()


def _spawn_prefix(sig: int, user: str | None) -> list[str]:
    """`setpriv` options that set the death signal and drop to `user`, or [] when unavailable.

    Why not preexec_fn and Popen(user=...): either makes Python fork() rather than vfork(), and
    a fork() child of a process that already runs grpc executes grpc's atfork handlers before
    exec, which can abort it (seen: PostgreSQL dying with SIGABRT and a grpc epoll error in its
    log). setpriv (util-linux) does the same two things after exec, in its own process.
    """
    if _SETPRIV is None:
        return []
    prefix = [_SETPRIV]
    if user:
        import pwd

        entry = pwd.getpwnam(user)
        prefix += [f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]
    # The kernel sends the signal when the spawning *thread* exits: only safe from the main thread.
    if threading.current_thread() is threading.main_thread():
        prefix.append(f"--pdeathsig={signal.Signals(sig).name}")
    return [*prefix, "--"]


def _death_signal_hook(sig: int, parent_pid: int) -> Callable[[], None] | None:
    """preexec_fn that asks the kernel to send `sig` to the child when its parent thread dies.

    Only used when spawning from the main thread: the signal fires when the spawning *thread*
    exits, which for a worker thread would be far too early.
    """
    if _libc is None or threading.current_thread() is not threading.main_thread():
        return None
    libc = _libc

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return hook


class ServerProcess:
    """One server process in its own process group, output appended to `log_path`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
        death_signal: int = signal.SIGKILL,
        error_pattern: str = r"\b(ERROR|FATAL|PANIC)\b|^Caused by:|^[\w.$]+(Exception|Error)\b",
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.user = user
        self.stop_signal = stop_signal
        self.death_signal = death_signal
        self.error_pattern = re.compile(error_pattern)
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self) -> None:
        if self.alive():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            log.write(f"\n===== {time.strftime('%H:%M:%S')} start: {shlex.join(self.argv)}\n".encode())
            log.flush()
            prefix = _spawn_prefix(self.death_signal, self.user)
            try:
                if prefix:
                    self._popen = subprocess.Popen(
                        [*prefix, *self.argv],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=self.cwd,
                        env=self.env,
                        start_new_session=True,
                    )
                else:
                    self._popen = subprocess.Popen(
                        self.argv,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=self.cwd,
                        env=self.env,
                        user=self.user,
                        group=self._group(),
                        extra_groups=[] if self.user else None,
                        start_new_session=True,
                        preexec_fn=_death_signal_hook(self.death_signal, os.getpid()),
                    )
            except OSError as exc:
                raise ServerStartError(f"{self.name}: cannot run {self.argv[0]}: {exc}") from exc
        with _live_lock:
            _live.add(self)

    def _group(self) -> int | None:
        if not self.user:
            return None
        import pwd

        return pwd.getpwnam(self.user).pw_gid

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def _signal_group(self, sig: int) -> None:
        if self._popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    def stop(self, timeout: float = 30.0, sig: int | None = None) -> None:
        """Ask the server to stop (its stop signal, to the whole group); SIGKILL after `timeout`.

        Idempotent.
        """
        if self._popen is None:
            return
        if self._popen.poll() is None:
            self._signal_group(self.stop_signal if sig is None else sig)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with open(self.log_path, "ab") as log:
                    log.write(f"\n===== harness: no exit {timeout:.0f}s after stop, SIGKILL\n".encode())
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group and reap the leader. Idempotent."""
        if self._popen is None:
            return
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(10)
        with _live_lock:
            _live.discard(self)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def run_log(self) -> str:
        """What this run (since the last start()) has written to the log."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def failure_report(self, tail: int = 25, errors: int = 12) -> str:
        """The first error-looking lines of this run, then the log's tail: the cause of a failed
        start is often far above the tail (Kafka logs its whole shutdown after the fatal error)."""
        found = [line for line in self.run_log().splitlines() if self.error_pattern.search(line)]
        parts = []
        if found:
            parts.append(f"--- {self.log_path} (first error lines) ---\n" + "\n".join(found[:errors]))
        parts.append(f"--- {self.log_path} (tail) ---\n{self.log_tail(tail)}")
        return "\n".join(parts)


def wait_until(
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float,
    proc: ServerProcess | None = None,
    interval: float = 0.1,
) -> float:
    """Poll `check` until it is true; return the seconds it took.

    Raises ServerStartError when `timeout` passes or `proc` exits first.
    """
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if proc is not None and not proc.alive():
            raise ServerStartError(
                f"{proc.name} exited with code {proc.returncode()} while waiting for {what}\n"
                f"{proc.failure_report()}"
            )
        if time.monotonic() - start > timeout:
            tail = f"\n{proc.failure_report()}" if proc else ""
            raise ServerStartError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")
        time.sleep(interval)


def _at_exit() -> None:
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        # Quick and final: the graceful path is the fixtures' job.
        with contextlib.suppress(Exception):
            proc.stop(timeout=5.0, sig=proc.death_signal)
    if _root is not None and not os.environ.get(KEEP_DIRS_ENV):
        shutil.rmtree(_root, ignore_errors=True)


atexit.register(_at_exit)

"""Real spore and twist processes for integration tests, with bounded waits."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

TIMEOUT = 10.0
"""The longest any single wait for a process may take, in seconds."""

_BIN = Path(sys.executable).parent


def executable(name: str) -> str:
    """The path of an installed console script (spore, twist, twistd)."""
    path = _BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: pip install '.[test]' first")
    return found


class Process:
    """One running command; threads read its output as it comes, so it never blocks on a full pipe."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.argv = argv
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        self.output = {"stdout": b"", "stderr": b""}
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(pipe, name), daemon=True)
            for pipe, name in ((self.popen.stdout, "stdout"), (self.popen.stderr, "stderr"))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe, name: str) -> None:
        while chunk := pipe.read1(65536):
            with self._changed:
                self.output[name] += chunk
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def stdout(self) -> str:
        return self.output["stdout"].decode(errors="replace")

    @property
    def stderr(self) -> str:
        return self.output["stderr"].decode(errors="replace")

    def wait_for(self, pattern: str, stream: str = "stdout", timeout: float = TIMEOUT) -> re.Match:
        """Wait until ``pattern`` appears in the output; fail with the output if it does not."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        with self._changed:
            while not (match := regex.search(self.output[stream].decode(errors="replace"))):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.popen.poll() is not None and not any(r.is_alive() for r in self._readers)):
                    raise AssertionError(
                        f"{pattern!r} not seen in {stream} of {self.argv} within {timeout}s\n"
                        f"exit status: {self.popen.poll()}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
                    )
                self._changed.wait(min(remaining, 0.1))
        return match

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Wait for the process to exit (and its output to be read) and return its status."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.argv} still running after {timeout}s\nstderr:\n{self.stderr}") from None
        for reader in self._readers:
            reader.join(TIMEOUT)
        return self.popen.returncode

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for reader in self._readers:
            reader.join(TIMEOUT)


class Processes:
    """The processes one test started."""

    def __init__(self) -> None:
        self.running: list[Process] = []

    def start(self, *argv: str, env: dict[str, str] | None = None, cwd: str | None = None) -> Process:
        process = Process(list(argv), env=env, cwd=cwd)
        self.running.append(process)
        return process

    def spore(self, *args: str, env: dict[str, str] | None = None) -> Process:
        return self.start(executable("spore"), *args, env=env)

    def server(self, *args: str, env: dict[str, str] | None = None) -> tuple[Process, int]:
        """A spore server on an OS-chosen control port of 127.0.0.1: (process, control port)."""
        process = self.spore(
            "server", "--listen", "tcp:0:interface=127.0.0.1", "--bind-tunnels", "127.0.0.1", *args, env=env
        )
        match = process.wait_for(r"server listening on 127\.0\.0\.1:(\d+)", stream="stderr")
        return process, int(match.group(1))

    def local(self, local_port: int, control_port: int, *args: str, env: dict[str, str] | None = None) -> tuple[Process, int]:
        """A spore local client through the server on ``control_port``: (process, public port)."""
        process = self.spore(
            "local", str(local_port), "--to", "127.0.0.1", "--control-port", str(control_port),
            "--local-host", "127.0.0.1", *args, env=env,
        )
        match = process.wait_for(r"listening at 127\.0\.0\.1:(\d+)")
        return process, int(match.group(1))

    def stop_all(self) -> None:
        for process in self.running:
            process.stop()

"""Build the backend's private Python environment: a venv, then the requirements the project pins.

Run as a script, never imported by the add-on (it imports the contract by its absolute name, as the
backend does: the add-on folder is on its PYTHONPATH)::

    <python> install_backend.py --env DIR [--index-url URL] [--extra-index-url URL] [--cpu-only]

It speaks the contract's event stream on stdout (``stage``: environment, packages, check;
``progress`` with a message, the packages seen and the bytes downloaded; ``error``; ``done``) and
writes pip's own output to stderr (the add-on's log file). Exit codes: 0, 1 (what failed is the
`error` event), 130 (cancelled by SIGINT/SIGTERM).

Nothing half done is ever picked up: auto-detection takes an environment only once `READY_FILE`
is in it, and that file is written last, after every module imported. A fresh environment that
fails or is cancelled is deleted; an existing one being repaired loses its `READY_FILE` first.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

from occnet_contract.dependencies import MODULES, READY_FILE, REQUIREMENTS, env_python
from occnet_contract.files import atomic_write_json
from occnet_contract.protocol import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, encode_event

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
NEEDED_BYTES = {"cuda": 7_000_000_000, "cpu": 2_000_000_000}
"""Room the environment takes: measured 1.4 GB with the CPU build of torch, 5.6 GB with a CUDA build,
plus pip's downloads while it installs."""

_SIZE = {"kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "B": 1.0}
_FAILURES = [  # pip's output -> what happened and what to do (the first that matches)
    (r"No space left on device", "the disk filled up while installing; free some space and run Install Backend again"),
    (r"ProxyError|Tunnel connection failed|407 Proxy", "the proxy refused the connection; set HTTPS_PROXY (and "
     "HTTP_PROXY) for Blender, or check the proxy's address and credentials"),
    (r"40[13] Client Error|HTTP error 40[13]|403 Forbidden|401 Unauthorized",
     "the package index refused the request (HTTP 401/403); check the index URL and any credentials it needs"),
    (r"Name or service not known|Temporary failure in name resolution|nodename nor servname|getaddrinfo failed",
     "the package index's host name could not be resolved: no network, or a wrong index URL"),
    (r"Connection refused|NewConnectionError|Network is unreachable|timed out|ConnectTimeout|ReadTimeout",
     "the package index could not be reached (no network, a firewall, or a wrong index URL)"),
    (r"SSLError|CERTIFICATE_VERIFY_FAILED", "the secure connection to the package index failed (a certificate "
     "problem, often a proxy that inspects traffic); set PIP_CERT to its certificate"),
    (r"No matching distribution found for (\S+)|Could not find a version that satisfies the requirement (\S+)",
     "pip found no version of {0} for this Python and system at the package index"),
]


class Installer:
    def __init__(self, env: Path, pip_options: list[str], needed: int):
        self.env, self.pip_options, self.needed = env, pip_options, needed
        self.fresh = not env_python(env).is_file()
        self.started = time.monotonic()
        self.packages: list[str] = []
        self.bytes = 0.0
        self.pip: subprocess.Popen | None = None

    def emit(self, kind: str, **fields) -> None:
        sys.stdout.write(encode_event(kind, **fields))
        sys.stdout.flush()

    def progress(self, message: str) -> None:
        self.emit("progress", step=len(self.packages), message=message, bytes=int(self.bytes),
                  seconds=round(time.monotonic() - self.started, 1))

    def run(self) -> None:
        free = shutil.disk_usage(_existing_parent(self.env)).free
        if self.fresh and free < self.needed:
            smaller = (" (or choose CPU Only, which needs about "
                       f"{NEEDED_BYTES['cpu'] / 1e9:.0f} GB)") if self.needed > NEEDED_BYTES["cpu"] else ""
            raise InstallError(f"not enough disk space in {_existing_parent(self.env)}: the backend needs about "
                               f"{self.needed / 1e9:.1f} GB, {free / 1e9:.1f} GB are free; free some space{smaller}")
        (self.env / READY_FILE).unlink(missing_ok=True)  # from now on, auto-detection ignores this folder
        self.emit("stage", name="environment")
        if self.fresh:
            if self.env.exists():  # a folder left by a crash (no python in it): start it clean
                shutil.rmtree(self.env)
            self.progress(f"Creating a Python {sys.version.split()[0]} environment in {self.env}")
            venv.EnvBuilder(with_pip=True, clear=False).create(self.env)
        self.emit("stage", name="packages")
        self.pip_install()
        self.emit("stage", name="check")
        self.progress("Checking that every module imports")
        code = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]"
        check = subprocess.run([str(env_python(self.env)), "-c", code, *MODULES], capture_output=True, text=True)
        if check.returncode != 0:
            sys.stderr.write(check.stderr)
            last = (check.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise InstallError(f"the packages installed, but importing them fails: {last}")
        atomic_write_json(self.env / READY_FILE, {"requirements": list(REQUIREMENTS.values()),
                                                  "python": sys.version.split()[0], "created": time.time()})

    def pip_install(self) -> None:
        argv = [str(env_python(self.env)), "-m", "pip", "install", "--progress-bar", "off", "--no-input",
                "--disable-pip-version-check", *self.pip_options, *REQUIREMENTS.values()]
        sys.stderr.write("$ " + " ".join(argv) + "\n")
        self.progress(f"Installing {len(REQUIREMENTS)} packages and what they need")
        self.pip = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, bufsize=1)
        output: list[str] = []
        for line in self.pip.stdout:
            sys.stderr.write(line)
            output.append(line)
            self.read_pip_line(line.strip())
        if self.pip.wait() != 0:
            raise InstallError(summarize_pip_failure("".join(output), self.pip_options))

    def read_pip_line(self, line: str) -> None:
        if m := re.match(r"Collecting (\S+)", line):
            self.packages.append(m.group(1))
            self.progress(f"Collecting {m.group(1)}")
        elif m := re.match(r"Processing (\S+\.(?:whl|tar\.gz|zip))$", line):  # a file on disk or in pip's cache
            name = Path(m.group(1)).name.split("-")[0]
            self.packages.append(name)
            self.progress(f"Collecting {name} (from {Path(m.group(1)).parent})")
        elif m := re.match(r"Downloading (\S+) \(([\d.]+) (kB|KB|MB|GB|B)\)", line):
            self.bytes += float(m.group(2)) * _SIZE[m.group(3)]
            self.progress(f"Downloading {Path(m.group(1)).name.split('-')[0]} ({m.group(2)} {m.group(3)})")
        elif m := re.match(r"Installing collected packages: (.*)", line):
            self.progress(f"Installing {len(m.group(1).split(','))} packages")

    def clean_up(self) -> None:
        """After a failure or a cancel: a fresh environment is deleted; a repaired one stays without
        its READY_FILE (auto-detection skips it; Install Backend repairs it, Remove deletes it)."""
        if self.pip is not None and self.pip.poll() is None:
            self.pip.terminate()
            try:
                self.pip.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.pip.kill()
        if self.fresh:
            shutil.rmtree(self.env, ignore_errors=True)


class InstallError(Exception):
    pass


def summarize_pip_failure(output: str, pip_options: list[str]) -> str:
    index = next((pip_options[i + 1] for i, o in enumerate(pip_options[:-1]) if o == "--index-url"),
                 os.environ.get("PIP_INDEX_URL") or "PyPI")
    for pattern, message in _FAILURES:
        if m := re.search(pattern, output):
            found = next((g for g in m.groups() if g), "") if m.groups() else ""
            return f"pip failed ({index}): {message.format(found)}. The full output is in the log."
    last = [line for line in output.strip().splitlines() if line.strip()][-1:] or ["(no output)"]
    return f"pip failed ({index}): {last[0].strip()[:300]}. The full output is in the log."


def _existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the OccNet backend's Python environment.")
    parser.add_argument("--env", type=Path, required=True, help="the environment's folder")
    parser.add_argument("--index-url", help="the package index instead of PyPI")
    parser.add_argument("--extra-index-url", help="an index besides PyPI (e.g. PyTorch's CUDA builds)")
    parser.add_argument("--cpu-only", action="store_true", help="PyTorch's CPU build (no CUDA: smaller)")
    args = parser.parse_args(argv)
    options = ["--retries", "2", "--timeout", "30"]
    if args.index_url:
        options += ["--index-url", args.index_url]
    for url in [args.extra_index_url] + ([CPU_INDEX] if args.cpu_only else []):
        if url:
            options += ["--extra-index-url", url]
    installer = Installer(args.env.resolve(), options, NEEDED_BYTES["cpu" if args.cpu_only else "cuda"])
    signal.signal(signal.SIGTERM, _interrupt)
    # and SIGINT (the add-on's Cancel) always does: a process started in the background by a
    # non-interactive shell inherits SIGINT ignored, and would run on through a Cancel
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        installer.run()
    except KeyboardInterrupt:
        installer.clean_up()
        installer.emit("done", status="cancelled")
        return EXIT_CANCELLED
    except Exception as err:  # noqa: BLE001 - InstallError, OSError, ensurepip's CalledProcessError, a bug
        installer.clean_up()
        if isinstance(err, InstallError):
            message = str(err)
        elif isinstance(err, OSError):
            message = f"{err.filename or ''} {err.strerror or err}".strip()
        else:
            message = f"{type(err).__name__}: {err}"
        print(f"error: {message}", file=sys.stderr)
        installer.emit("error", message=message)
        installer.emit("done", status="error")
        return EXIT_FAILED
    installer.emit("done", status="ok", out=str(env_python(installer.env)),
                   seconds=round(time.monotonic() - installer.started, 1))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

"""One model process per machine: it maps the shared model copy and embeds for every server over a socket.

A model's tokenizer cannot be memory-mapped (a 500,000-token vocabulary costs each process ~100 MB of
its own), so servers do not load the model at all: the first one starts `python -m rlm_vault.modelserver`
in its own session, and every server sends texts to it on a Unix socket beside the shared copy. The
process exits when no server has been connected for `IDLE` seconds; a server that finds it gone (killed,
idle) starts a new one. Frames: 4-byte big-endian length + JSON; an answer is a JSON header, then the
float32 rows as raw bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm_vault.errors import CacheError
from rlm_vault.modelcache import cache_key, default_model_cache, open_shared, source_folder

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from rlm_vault.modelcache import StaticEncoder

    Matrix = NDArray[np.float32]
else:
    Matrix = Any

__all__ = ["IDLE", "ModelClient", "socket_path"]

IDLE = 30.0  # seconds without any connected server before the model process exits
START_WAIT = 300.0  # seconds a server waits for a new model process (the first one writes the copy)
RESTART_WAIT = 20.0  # the same when the process went away under a running server
MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to ~108 bytes
HEADER = struct.Struct(">I")
FAILED = 3  # exit status: the model could not be loaded (another process serving exits 0)


def socket_path(model: str, root: Path, dtype: str, max_length: int | None) -> Path:
    """The socket of the model process for this model version, dtype and truncation."""
    key = f"{cache_key(source_folder(model), dtype)}:{max_length}"
    return root / f"s-{hashlib.sha256(key.encode()).hexdigest()[:12]}.sock"


# ---------------------------------------------------------------------------------------------- frames


def _send(sock: socket.socket, header: dict[str, Any], payload: bytes = b"") -> None:
    data = json.dumps(header).encode()
    sock.sendall(HEADER.pack(len(data)) + data + payload)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the other side closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket) -> dict[str, Any]:
    (size,) = HEADER.unpack(_recv_exact(sock, HEADER.size))
    message: dict[str, Any] = json.loads(_recv_exact(sock, size))
    return message


# ---------------------------------------------------------------------------------------------- server


class _Service:
    """The accept loop and the per-connection threads of the model process."""

    def __init__(self, encoder: StaticEncoder, listener: socket.socket, idle: float) -> None:
        self.encoder, self.listener, self.idle = encoder, listener, idle
        self.clients = 0
        self.last_seen = time.monotonic()
        self.guard = threading.Lock()  # counters, and one encode at a time (the tokenizer is shared)

    def run(self) -> None:
        self.listener.settimeout(1.0)
        while True:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                with self.guard:
                    if not self.clients and time.monotonic() - self.last_seen > self.idle:
                        return
                continue
            with self.guard:
                self.clients += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                while True:
                    self._answer(conn, _recv(conn))
        except (ConnectionError, OSError, ValueError):
            pass  # the server went away, or sent garbage: drop the connection
        finally:
            with self.guard:
                self.clients -= 1
                self.last_seen = time.monotonic()

    def _answer(self, conn: socket.socket, request: dict[str, Any]) -> None:
        import numpy as np

        if request.get("op") == "info":
            _send(conn, {"dim": self.encoder.dim, "folder": str(self.encoder.folder), "pid": os.getpid()})
            return
        texts = [str(t) for t in request.get("texts", [])]
        with self.guard:
            vectors = np.ascontiguousarray(self.encoder.encode(texts), dtype=np.float32)
        _send(conn, {"rows": int(vectors.shape[0]), "dim": int(vectors.shape[1])}, vectors.tobytes())


def serve(model: str, root: Path, dtype: str, max_length: int | None, path: Path, idle: float = IDLE) -> int:
    """Run the model process on `path` until idle; 0 when another one already serves there."""
    root.mkdir(parents=True, exist_ok=True)
    lock = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # held for the whole life of the process serving this socket
    encoder = open_shared(model, root, dtype, max_length)
    encoder.encode(["warm up"])
    _give_back_freed_memory()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a socket left by a process that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(64)
    try:
        _Service(encoder, listener, idle).run()
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # before the lock goes: a newcomer then binds a fresh socket
        listener.close()
    return 0


def _give_back_freed_memory() -> None:
    """Return to the OS what loading freed (the tokenizer's JSON, a copy just written): glibc keeps it."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m rlm_vault.modelserver` (started by servers, not by people)."""
    parser = argparse.ArgumentParser(description="rlm-vault model process (started by rlm-vault serve)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--idle", type=float, default=IDLE)
    args = parser.parse_args(argv)
    max_length = None if args.max_length <= 0 else args.max_length
    try:
        return serve(args.model, args.cache, args.dtype, max_length, args.socket, args.idle)
    except Exception as exc:  # noqa: BLE001 - the waiting server reads this from the log
        print(f"model process failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return FAILED


# ---------------------------------------------------------------------------------------------- client


class ModelClient:
    """A server's connection to the model process, started on first use and restarted when gone."""

    def __init__(
        self,
        model: str,
        root: Path | None = None,
        dtype: str = "float16",
        max_length: int | None = 512,
        idle: float = IDLE,
    ) -> None:
        self.model, self.dtype, self.max_length, self.idle = model, dtype, max_length, idle
        self.root = Path(root) if root is not None else default_model_cache()
        self.path = socket_path(model, self.root, dtype, max_length)
        if len(str(self.path)) > MAX_SOCKET_PATH:
            raise CacheError(f"model cache folder {self.root} is too long a path for a socket")
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._spawned: list[subprocess.Popen[bytes]] = []
        self.info: dict[str, Any] = {}

    @property
    def dim(self) -> int:
        return int(self.info.get("dim", 0))

    def connect(self, wait: float = START_WAIT) -> dict[str, Any]:
        """Connect (starting the model process if none answers); returns its info."""
        with self._lock:
            self._connect(wait)
            return self.info

    def encode(self, texts: list[str]) -> Matrix:
        """float32 rows for `texts` from the model process (one reconnect if it went away)."""
        with self._lock:
            try:
                return self._encode(texts)
            except (ConnectionError, OSError, ValueError):
                self._close()
            self._connect(RESTART_WAIT)  # a search is waiting: give up sooner than at the first start
            return self._encode(texts)

    def close(self) -> None:
        with self._lock:
            self._close()

    def _encode(self, texts: list[str]) -> Matrix:
        import numpy as np

        if self._sock is None:
            raise ConnectionError("not connected to the model process")
        _send(self._sock, {"texts": texts})
        header = _recv(self._sock)
        rows, dim = int(header["rows"]), int(header["dim"])
        data = _recv_exact(self._sock, rows * dim * 4)
        return np.frombuffer(data, dtype=np.float32).reshape(rows, dim).copy()

    def _close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _try(self) -> bool:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.path))
            _send(sock, {"op": "info"})
            self.info = _recv(sock)
        except (OSError, ValueError):
            sock.close()
            return False
        self._sock = sock
        return True

    def _connect(self, wait: float) -> None:
        if self._sock is not None or self._try():
            return
        proc = self._spawn()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self._try():
                return
            if proc.poll() == FAILED:
                raise CacheError(f"the model process could not load {self.model!r}: {self._log_tail()}")
            if proc.poll() == 0 and not self._serving():
                proc = self._spawn()  # it lost a race with a process that has exited since
            time.sleep(0.05)
        raise CacheError(f"the model process for {self.model!r} did not answer in {wait:g} s")

    def _serving(self) -> bool:
        """Whether a model process holds this socket's lock (it holds it from start to exit)."""
        try:
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def _spawn(self) -> subprocess.Popen[bytes]:
        for old in [p for p in self._spawned if p.poll() is not None]:
            self._spawned.remove(old)  # reaped
        try:
            return self._popen()
        except OSError as exc:
            raise CacheError(f"the model process could not be started in {self.root}: {exc}") from exc

    def _popen(self) -> subprocess.Popen[bytes]:
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "rlm_vault.modelserver",
            "--model",
            self.model,
            "--cache",
            str(self.root),
        ]
        cmd += ["--dtype", self.dtype, "--max-length", str(self.max_length or 0), "--socket", str(self.path)]
        cmd += ["--idle", str(self.idle)]
        with open(self._log(), "ab") as log:
            # Its own session: closing or killing the window that started it does not stop it.
            proc = subprocess.Popen(
                cmd,
                cwd=self.root,  # holds no project folder open
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        self._spawned.append(proc)
        return proc

    def _log(self) -> Path:
        return self.path.with_suffix(".log")

    def _log_tail(self) -> str:
        try:
            return self._log().read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1]
        except (OSError, IndexError):
            return "no message"


if __name__ == "__main__":
    raise SystemExit(main())

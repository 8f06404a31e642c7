"""ClamAV's clamd for tests, offline: a private signature database holding only the EICAR test
signature (as an MD5 hash signature), a Unix socket in a temporary directory, started as a child of
the test and stopped by its pid. scripts/services/clamav.sh installs the daemon."""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

__all__ = ["EICAR", "Clamd", "clamd_binary"]

# The EICAR anti-virus test file (68 bytes): harmless, and recognised by every scanner as a "virus".
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURE = "Eicar-Test-Signature"


def clamd_binary() -> str | None:
    return shutil.which("clamd") or ("/usr/sbin/clamd" if Path("/usr/sbin/clamd").exists() else None)


class Clamd:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "clamd.sock"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> Clamd:
        binary = clamd_binary()
        assert binary is not None
        db = self.root / "db"
        db.mkdir(parents=True, exist_ok=True)
        (db / "test.hdb").write_text(f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:{SIGNATURE}\n")
        conf = self.root / "clamd.conf"
        conf.write_text(
            f"DatabaseDirectory {db}\nLocalSocket {self.socket}\nForeground yes\n"
            f"PidFile {self.root / 'clamd.pid'}\nLogFile {self.root / 'clamd.log'}\n"
        )
        with open(self.root / "clamd.out", "ab") as out:
            self.process = subprocess.Popen(
                [binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"clamd did not start: {(self.root / 'clamd.out').read_text()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

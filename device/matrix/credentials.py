"""The wearer's Matrix login, kept only on the device.

An access token and the device id it belongs to, in a JSON file the device
alone can read (mode 0600, in a 0700 directory), written atomically so a crash
never leaves half a file. The password is used once to log in and never kept.
The token never appears in a log line or a repr.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tidings.device.matrix.errors import MatrixError


class CredentialsError(MatrixError):
    pass


@dataclass(frozen=True)
class Credentials:
    homeserver: str
    user_id: str
    device_id: str
    access_token: str = field(repr=False)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".credentials-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"homeserver": self.homeserver, "user_id": self.user_id, "device_id": self.device_id,
                           "access_token": self.access_token}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> Credentials:
        try:
            mode = path.stat().st_mode & 0o777
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CredentialsError(f"not logged in to Matrix: {path} does not exist "
                                   "(run `tidings connect matrix --login`)") from None
        except (OSError, ValueError) as exc:
            raise CredentialsError(f"cannot read the Matrix login in {path}: {exc}; "
                                   "log in again with `tidings connect matrix --login`") from None
        if mode & 0o077:
            raise CredentialsError(f"{path} is readable by others (mode {mode:o}); an access token must be "
                                   f"private: chmod 600 {path}")
        try:
            return cls(data["homeserver"], data["user_id"], data["device_id"], data["access_token"])
        except (KeyError, TypeError):
            raise CredentialsError(f"{path} is not a Tidings Matrix login; log in again with "
                                   "`tidings connect matrix --login`") from None

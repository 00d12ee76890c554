"""Atomic writes that never destroy what they do not own.

A temporary file beside the target is written, fsynced and moved into place with
``os.replace``, then the folder is fsynced: a crash at any moment leaves the old file or the
new one. A symlink is written through to its target; a directory, FIFO, device or socket at
the path is refused untouched. A new file gets the mode ``open()`` would give it (``0o666``
less the umask, which is never changed); an overwritten one keeps its mode and owner.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
import stat
from collections.abc import Callable
from pathlib import Path

from .errors import CheckpointError, CheckpointWriteError, PathLike

log = logging.getLogger("compile_ckpt")

#: This machine, in the names of the temporary files it writes: a save judges whether a
#: temporary file's writer is still alive only for files written on its own machine (on a
#: shared filesystem another host's PIDs mean nothing here).
HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _target_of(path: Path) -> tuple[Path, os.stat_result | None]:
    """The file a write to ``path`` replaces (a symlink is followed, as ``torch.save`` follows
    it) and its status; anything but a regular file is refused."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target, None
    if not stat.S_ISREG(st.st_mode):
        mode = st.st_mode
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        via = f" (the symlink's target {target})" if target != path else ""
        raise CheckpointWriteError(f"is {kind}{via}, not a regular file; refusing to replace it, "
                                   "nothing was written", path)
    return target, st


def _temp_pattern(target: Path) -> str:
    return "." + re.sub(r"([*?\[])", r"[\1]", target.name) + ".*.tmp"


def remove_stale_temps(target: Path) -> list[Path]:
    """Delete the temporary files that killed saves to ``target`` on this machine left behind
    (their writer's PID is no longer alive); return them. A file from another machine, from a
    live writer or with a name this library did not give is never touched."""
    removed = []
    for tmp in target.parent.glob(_temp_pattern(target)):
        host, _, rest = tmp.name[len(target.name) + 2:].partition("-")
        pid = rest.split("-", 1)[0]
        if host != HOST_TAG or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
                log.info("compile_ckpt: removed %s, left by a save that was killed", tmp)
        except PermissionError:  # alive, owned by someone else
            continue
    return removed


def _create_temp(target: Path) -> Path:
    """A new, empty file beside ``target``, created as ``open()`` creates one (so the umask
    and any default ACL apply), named after this machine, this process and a random token."""
    for _ in range(100):
        token = f"{HOST_TAG}-{os.getpid()}-{secrets.token_hex(4)}"
        tmp = target.with_name(f".{target.name}.{token}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {target}")


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)``, then move the file onto ``path`` in one step; return ``path``.

    Raises :class:`CheckpointWriteError` when the path is not a regular file or the write
    fails (a full disk), after removing the temporary file; the old file is unchanged.
    """
    path = Path(path)
    target, st = _target_of(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)
        tmp = _create_temp(target)
    except OSError as exc:
        raise CheckpointWriteError(f"cannot be written ({exc.strerror or exc}); nothing changed",
                                   path) from exc
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if st is not None:
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, target)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        if isinstance(exc, CheckpointError):
            raise
        free = shutil.disk_usage(target.parent).free
        why = (exc.strerror if isinstance(exc, OSError) and exc.strerror
               else str(exc).splitlines()[0][:200])
        raise CheckpointWriteError(f"could not be written ({why}; {free:,} bytes free on its "
                                   "device); the previous file, if any, is unchanged",
                                   path) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

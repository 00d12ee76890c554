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

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, so no temporary file is judged stale
    fcntl = None  # type: ignore[assignment]

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
    except FileNotFoundError:  # other OSErrors (a symlink loop, ...): atomic_write names them
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


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _temp_stem(target: Path) -> str:
    """The target's name in its temporary files' names, shortened (with a hash of the whole
    name) where the temporary name would be longer than the filesystem allows: any name that
    ``torch.save`` can write can be saved atomically."""
    name = target.name
    room = _name_max(target.parent) - len(f"..{HOST_TAG}-4294967296-{'0' * 16}.tmp")
    if len(os.fsencode(name)) <= room:
        return name
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:12]
    keep = name.encode("utf-8", "surrogateescape")[: max(room - 13, 1)]
    return keep.decode("utf-8", "ignore") + "~" + digest


def _temp_pattern(target: Path) -> str:
    return "." + re.sub(r"([*?\[])", r"[\1]", _temp_stem(target)) + ".*.tmp"


def _held_by_a_writer(tmp: Path) -> bool | None:
    """Whether a live writer holds ``tmp``'s lock (None: this platform has no ``flock``)."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    try:
        fd = os.open(tmp, os.O_RDONLY)
    except OSError:
        return True  # gone already, or not ours to open: leave it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the lock, if it was taken


def remove_stale_temps(target: Path) -> list[Path]:
    """Delete the temporary files that killed saves to ``target`` on this machine left behind;
    return them. A file is stale only when its writer's PID is not alive here *and* no process
    holds its lock (a writer holds it from creation to rename, so a live writer in another PID
    namespace is safe too). A file from another machine or with a name this library did not
    give is never touched."""
    removed = []
    stem = _temp_stem(target)
    ours = re.compile(rf"\.{re.escape(stem)}\.{HOST_TAG}-(\d+)-[0-9a-f]+\.tmp")
    for tmp in target.parent.glob(_temp_pattern(target)):
        match = ours.fullmatch(tmp.name)  # exactly this target's, written on this machine
        pid = match.group(1) if match else ""
        if not pid or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):  # alive, owned by someone else; or no PID
            continue
        if _held_by_a_writer(tmp) is False:
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
                log.info("compile_ckpt: removed %s, left by a save that was killed", tmp)
    return removed


def _create_temp(target: Path) -> tuple[Path, int]:
    """A new, empty file beside ``target``, created as ``open()`` creates one (so the umask
    and any default ACL apply), named after this machine, this process and a random token, and
    locked (the lock tells other saves its writer is alive). Returns it and the locked fd."""
    stem = _temp_stem(target)
    for _ in range(100):
        token = f"{HOST_TAG}-{os.getpid()}-{secrets.token_hex(8)}"
        tmp = target.with_name(f".{stem}.{token}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        if fcntl is not None:
            with contextlib.suppress(OSError):  # a filesystem without locks: then no other
                fcntl.flock(fd, fcntl.LOCK_EX)  # save can take the lock, so none deletes it
        return tmp, fd
    raise FileExistsError(f"no free temporary name beside {target}")


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)``, then move the file onto ``path`` in one step; return ``path``.

    Raises :class:`CheckpointWriteError` when the path is not a regular file or the write
    fails (a full disk, whatever the writer raises for it), after removing the temporary file;
    a :class:`CheckpointError` from ``write`` passes through. The old file is unchanged.
    """
    path = Path(path)
    try:
        target, st = _target_of(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)
        tmp, lock = _create_temp(target)
    except CheckpointError:
        raise
    except OSError as exc:
        raise CheckpointWriteError(f"cannot be written ({exc.strerror or exc}); nothing changed",
                                   path) from exc
    try:
        _write_and_replace(write, tmp, target, st)
    except CheckpointError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:  # noqa: BLE001 - torch (RuntimeError), safetensors (its own) on a full disk
        tmp.unlink(missing_ok=True)
        free = shutil.disk_usage(target.parent).free
        why = (exc.strerror if isinstance(exc, OSError) and exc.strerror
               else f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        raise CheckpointWriteError(f"could not be written ({why}; {free:,} bytes free on its "
                                   "device); the previous file, if any, is unchanged",
                                   path) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(lock)
    _fsync_folder(target.parent)
    return path


def _write_and_replace(write: Callable[[Path], None], tmp: Path, target: Path,
                       st: os.stat_result | None) -> None:
    write(tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    if st is not None:
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        if os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, target)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

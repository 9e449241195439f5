"""One user of the lab at a time, across processes (stestr workers, the CLI).

Two migrations at once would share the link and the two CPU cores and
measure nonsense, so everything that drives guests holds this lock.
"""
from __future__ import annotations

import fcntl
import os
import typing
from pathlib import Path

from nova_livemig_ext import safefile

from nova_livemig_lab.config import HOST_PRIVATE_DIRS, LabConfig
from nova_livemig_lab.errors import LabError

LOCK_NAME = "lab.lock"
# Where Debian 12's QEMU is unpacked (oldqemu.old_qemu_dir): run as root.
OLD_QEMU_DIR = "qemu-7.2"
_HINT = "remove it, or choose another with NOVA_LIVEMIG_LAB_DIR"


def private_state_dir(path: Path, create: bool = True) -> Path:
    """Create ``path`` for this user alone, or check that it is so.

    The lab runs libvirtd and QEMU as root from this directory (it becomes
    their /etc/libvirt): a directory that another user created or can write
    to (under /var/tmp anybody can create it first) is refused, and so is
    one that somebody else could swap on the way down from ``/`` (a
    directory of theirs, or one writable by others without the sticky bit),
    or a symlink. Missing directories are created (mode 755) after their
    parents passed, unless ``create`` is false.
    """
    try:
        safefile.check_trusted_dir(path, create=create)
    except safefile.UnsafePath as exc:
        raise LabError(f"lab state directory {path} refused: {exc}: {_HINT}") from None
    except OSError as exc:
        raise LabError(f"lab state directory {path}: {exc.strerror or exc}") from None
    return path


def state_subdir(state_dir: Path, relative: str | Path, create: bool = True) -> Path | None:
    """A directory below the (checked) state directory, each step of it ours.

    Every component below ``state_dir`` must be a real directory (a
    symlink planted there would redirect a bind mount or a write), this
    user's and writable by nobody else; missing ones are created when
    ``create``, otherwise None is returned for a directory that is absent.
    """
    relative = Path(relative)
    if relative.is_absolute() or ".." in relative.parts:
        raise LabError(f"{relative} is not a path below the lab state directory")
    current = state_dir
    for part in relative.parts:
        current = current / part
        try:
            if not safefile.check_private_dir(current, create=create):
                return None
        except safefile.UnsafePath as exc:
            raise LabError(f"lab state directory {state_dir} refused: {exc}: "
                           f"{_HINT}") from None
        except OSError as exc:
            raise LabError(f"lab directory {current}: {exc.strerror or exc}") from None
    return current


def lab_dirs(config: LabConfig) -> list[Path]:
    """Every directory of the state directory that the lab mounts, writes or runs from."""
    dirs: list[Path] = []
    for host in config.hosts:
        dirs.append(host.root)
        dirs.extend(host.private_dir(key) for key, _target in HOST_PRIVATE_DIRS)
        dirs.append(host.private_dir("log") / "qemu")
    dirs.extend([config.shared_dir, config.guest_dir, config.download_dir])
    return dirs


def trusted_lab_dirs(config: LabConfig, create: bool = True) -> None:
    """Check (and with ``create`` make) the state directory and the lab's directories.

    For every lab command before it reads, writes, mounts or runs anything
    in the state directory (``setup`` and ``start`` above all: ``start``
    bind-mounts hosts/*/etc as a root libvirtd's /etc/libvirt). Raises
    LabError with one line. Without ``create`` nothing is made: absent
    directories are skipped (``status`` and ``stop`` on a machine without a
    lab).
    """
    state_dir = config.state_dir
    if not create and not os.path.lexists(state_dir):
        return
    private_state_dir(state_dir, create=create)
    for path in lab_dirs(config):
        state_subdir(state_dir, path.relative_to(state_dir), create=create)
    # Unpacked by fetch-old-qemu and run as root by a guest: checked if there.
    state_subdir(state_dir, OLD_QEMU_DIR, create=False)


def write_state_file(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Replace a file of the lab with ``data`` (text is UTF-8), never through a symlink.

    Atomic (a new file beside it, synced, renamed over it): a planted
    symlink or a full disk never reaches, or half-writes, the old file.
    ``mode`` (0o755 for a script) is filtered by the umask.
    """
    try:
        safefile.atomic_write(path, data.encode("utf-8") if isinstance(data, str) else data,
                              mode)
    except safefile.UnsafePath as exc:
        raise LabError(f"refusing to write {path}: {exc}") from None
    except OSError as exc:
        raise LabError(f"cannot write {path}: {exc.strerror or exc}") from None


def open_state_log(path: Path) -> typing.BinaryIO:
    """A lab log (a daemon's output) opened for appending, never through a symlink."""
    try:
        return safefile.open_append(path)
    except safefile.UnsafePath as exc:
        raise LabError(f"refusing to write {path}: {exc}") from None
    except OSError as exc:
        raise LabError(f"cannot write {path}: {exc.strerror or exc}") from None


class LabLock:
    """Exclusive, blocking ``flock`` on a file in the state directory."""

    def __init__(self, config: LabConfig) -> None:
        private_state_dir(config.state_dir)
        self._path = config.state_dir / LOCK_NAME
        self._handle: typing.BinaryIO | None = None

    def __enter__(self) -> "LabLock":
        # Never through a symlink, and never a FIFO or device planted there.
        self._handle = open_state_log(self._path)
        fcntl.flock(self._handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

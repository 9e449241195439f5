"""Paths a privileged process can trust, and files written without surprises.

Two things an operator's command (often run as root) must not do with a path
someone else had a hand in:

* use a directory another user owns, can write to, or can swap for a
  symlink, anywhere from ``/`` down: whatever that user planted there
  (a daemon's configuration, a virtualenv's interpreter, a symlink to
  ``/etc/shadow``) would be read, run or written with our privileges;
* write a file in place: a planted symlink redirects the write to its
  target, and a failed write leaves half a file where the previous one was.

:func:`check_trusted_dir` walks a directory's path component by component
(with ``lstat``, never following a link it has not checked), and
:func:`atomic_write` replaces a file with a new one created next to it
(``O_CREAT|O_EXCL|O_NOFOLLOW``), written, synced and renamed over the old.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import typing

# As the kernel counts symlinks in one lookup (MAXSYMLINKS).
MAX_SYMLINKS = 40
_TEMP_ATTEMPTS = 100


class UnsafePath(OSError):
    """A path that cannot be trusted; ``str()`` says why in one line."""


def _others_can_write(mode: int) -> bool:
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))


def _mode(info: os.stat_result) -> str:
    return '%o' % stat.S_IMODE(info.st_mode)


def _check_component(path: str, info: os.stat_result, parent: str | None,
                     parent_info: os.stat_result | None, me: int) -> None:
    """One directory on the way down: owned by root or us, and only we can
    swap it (a parent writable by others is sticky and the entry ours)."""
    if info.st_uid not in (0, me):
        raise UnsafePath('%s belongs to uid %d (only root or uid %d may own '
                         'a directory on the way to it)'
                         % (path, info.st_uid, me))
    if (parent_info is not None and _others_can_write(parent_info.st_mode)
            and info.st_uid != me):
        raise UnsafePath('%s belongs to uid %d, not to uid %d, in %s, which '
                         'others can write to' % (path, info.st_uid, me,
                                                  parent))
    if _others_can_write(info.st_mode) and not info.st_mode & stat.S_ISVTX:
        raise UnsafePath('%s is writable by group or others (mode %s) '
                         'without the sticky bit' % (path, _mode(info)))


def _make_dir(path: str, mode: int) -> None:
    """mkdir with exactly ``mode`` (whatever the umask); an entry someone
    else made first is left for the checks to judge."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def check_private_dir(path: str | os.PathLike[str], create: bool = False,
                      mode: int = 0o755) -> bool:
    """One directory inside a trusted one: a real directory (not a
    symlink), this user's own and writable by nobody else.

    With ``create`` a missing one is made with ``mode``; without, a missing
    one returns False (nothing there to trust). Raises
    :class:`UnsafePath` otherwise. The caller checked the parent.
    """
    shown = os.fspath(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return False
        _make_dir(shown, mode)
        info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePath('%s is a symlink, not a directory' % shown)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePath('%s is not a directory' % shown)
    me = os.geteuid()
    if info.st_uid != me:
        raise UnsafePath('%s belongs to uid %d, not to uid %d'
                         % (shown, info.st_uid, me))
    if _others_can_write(info.st_mode):
        raise UnsafePath('%s is writable by group or others (mode %s)'
                         % (shown, _mode(info)))
    return True


def check_trusted_dir(path: str | os.PathLike[str], create: bool = False,
                      mode: int = 0o755) -> str:
    """Refuse a directory that anybody but this user could have touched.

    The directory must not be a symlink, must belong to the effective user
    and must not be writable by group or others. Every directory from
    ``/`` down to it must belong to root or to this user, and be writable
    by nobody else unless it is sticky (``/tmp``, ``/var/tmp``), in which
    case the next entry must be this user's own and not a symlink. A
    symlink on the way (``/var/run``) is followed only if it passes the
    same test as a directory entry; its target is then checked the same way.

    With ``create``, missing directories are made (``mode``, exactly) as
    the walk reaches them, each only after its parent passed.

    Returns the absolute path as given (symlinks on the way not resolved);
    raises :class:`UnsafePath` with the reason on one line, or ``OSError``
    for a directory that cannot be read or made.
    """
    text = os.fspath(path)
    if not text:
        raise UnsafePath('an empty path is not a directory')
    if not os.path.isabs(text):
        text = os.path.join(os.getcwd(), text)
    me = os.geteuid()
    pending = [part for part in text.split('/') if part not in ('', '.')]
    pending.reverse()
    current = '/'
    info = os.lstat(current)
    _check_component(current, info, None, None, me)
    hops = 0
    while pending:
        name = pending.pop()
        if name == '..':
            # ``current`` holds no symlink: its lexical parent is its parent.
            current = os.path.dirname(current)
            info = os.lstat(current)
            continue
        last = not pending
        child = os.path.join(current, name)
        try:
            child_info = os.lstat(child)
        except FileNotFoundError:
            if not create:
                raise UnsafePath('%s does not exist' % child) from None
            _make_dir(child, mode)
            child_info = os.lstat(child)
        if stat.S_ISLNK(child_info.st_mode):
            if last:
                raise UnsafePath('%s is a symlink, not a directory' % child)
            if _others_can_write(info.st_mode):
                raise UnsafePath('%s is a symlink in %s, which others can '
                                 'write to' % (child, current))
            if child_info.st_uid not in (0, me):
                raise UnsafePath('%s is a symlink of uid %d'
                                 % (child, child_info.st_uid))
            hops += 1
            if hops > MAX_SYMLINKS:
                raise UnsafePath('too many symlinks on the way to %s' % text)
            target = os.readlink(child)
            parts = [p for p in target.split('/') if p not in ('', '.')]
            pending.extend(reversed(parts))
            if target.startswith('/'):
                current = '/'
                info = os.lstat(current)
            continue
        if not stat.S_ISDIR(child_info.st_mode):
            raise UnsafePath('%s is not a directory' % child)
        if last and child_info.st_uid != me:
            raise UnsafePath('%s belongs to uid %d, not to uid %d'
                             % (child, child_info.st_uid, me))
        _check_component(child, child_info, current, info, me)
        current, info = child, child_info
    if info.st_uid != me:
        raise UnsafePath('%s belongs to uid %d, not to uid %d'
                         % (current, info.st_uid, me))
    if _others_can_write(info.st_mode):
        raise UnsafePath('%s is writable by group or others (mode %s)'
                         % (current, _mode(info)))
    return text


def _split(path: str | os.PathLike[str]) -> tuple[str, str]:
    text = os.fspath(path)
    directory, name = os.path.split(text)
    if not name or name in ('.', '..'):
        raise UnsafePath('%s is not a file name' % text)
    return directory or '.', name


def _refuse_existing(directory_fd: int, name: str,
                     shown: str) -> os.stat_result | None:
    """The final path: absent (None), or a regular file (never followed)."""
    try:
        info = os.lstat(name, dir_fd=directory_fd)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePath('%s is a symlink: refusing to write through it'
                         % shown)
    if stat.S_ISDIR(info.st_mode):
        raise UnsafePath('%s is a directory' % shown)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafePath('%s is not a regular file' % shown)
    return info


def _open_directory(directory: str) -> int:
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _create_temp(directory_fd: int, name: str, mode: int) -> tuple[int, str]:
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
             | os.O_CLOEXEC)
    for _attempt in range(_TEMP_ATTEMPTS):
        temp = '.%s.%s.tmp' % (name[:200], secrets.token_hex(6))
        try:
            return os.open(temp, flags, mode, dir_fd=directory_fd), temp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, 'no free temporary name', name)


def check_writable(path: str | os.PathLike[str]) -> None:
    """Refuse now what :func:`atomic_write` would refuse or fail on later.

    The path must be absent or a regular file (not a symlink), its
    directory must exist and take a new file: a temporary one is created
    there and removed again. A file the user cannot write to (its mode) is
    refused too, as writing it in place would have been.
    """
    directory, name = _split(path)
    shown = os.fspath(path)
    directory_fd = _open_directory(directory)
    try:
        if _refuse_existing(directory_fd, name, shown) is not None:
            if not os.access(name, os.W_OK, dir_fd=directory_fd,
                             follow_symlinks=False):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES),
                                      shown)
        fd, temp = _create_temp(directory_fd, name, 0o600)
        os.close(fd)
        os.unlink(temp, dir_fd=directory_fd)
    finally:
        os.close(directory_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write(path: str | os.PathLike[str], data: bytes,
                 mode: int = 0o666) -> None:
    """Replace ``path`` with ``data``, or leave it exactly as it was.

    The data goes to a new file in the same directory (created with
    ``O_EXCL|O_NOFOLLOW``, so nothing planted there is opened), is synced,
    and is renamed over ``path``; the directory is synced too (as far as
    the filesystem can). A ``path``
    that is a symlink, a directory or a device is refused (``UnsafePath``)
    before anything is written. ``mode`` is filtered by the umask; a file
    of ours that is replaced keeps its own mode. On any error the temporary
    file is removed and the error raised.
    """
    directory, name = _split(path)
    shown = os.fspath(path)
    directory_fd = _open_directory(directory)
    try:
        old = _refuse_existing(directory_fd, name, shown)
        fd, temp = _create_temp(directory_fd, name, mode)
        try:
            try:
                if old is not None and old.st_uid == os.geteuid():
                    os.fchmod(fd, stat.S_IMODE(old.st_mode))
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            # Still not a symlink or a directory: rename would replace a
            # symlink itself (never its target), but say so rather than do it.
            _refuse_existing(directory_fd, name, shown)
            os.rename(temp, name, src_dir_fd=directory_fd,
                      dst_dir_fd=directory_fd)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=directory_fd)
            except OSError:
                pass
            raise
        try:
            # The rename itself to disk; the new file is in place already,
            # so a filesystem that cannot sync a directory is no failure.
            os.fsync(directory_fd)
        except OSError:
            pass
    finally:
        os.close(directory_fd)


def open_append(path: str | os.PathLike[str],
                mode: int = 0o644) -> typing.BinaryIO:
    """A log file opened for appending, never through a symlink.

    For output that grows while a process runs (a daemon's stdout), where
    replacing the file is not an option. A symlink, directory or device at
    ``path`` is refused.
    """
    # O_NONBLOCK: a FIFO planted there must not hang the open.
    flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
             | os.O_CLOEXEC | os.O_NONBLOCK)
    shown = os.fspath(path)
    try:
        fd = os.open(path, flags, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePath('%s is a symlink: refusing to write through it'
                             % shown) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath('%s is not a regular file' % shown)
    os.set_blocking(fd, True)
    return os.fdopen(fd, 'ab')

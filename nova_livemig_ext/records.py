"""What nova-compute must remember of a live migration across a restart.

Nova keeps the migration's data (``migrate_data``, the destination, the
exact libvirt call) only in the memory of the thread that runs it. When
nova-compute dies during a migration, the libvirt job carries on, but
nothing is left to finish Nova's side: upstream Nova then leaves the record
``running (post-copy)`` forever. So each migration writes one small JSON
file under ``<state_path>/livemig_ext/`` when it starts, adds the migrate
call once it is made, and removes the file when it ends. On start,
``init_host`` reads what is left and brings each migration to its true end.

A migration left for an operator (post-copy that could not be resumed)
keeps its file, so that a restart after ``nova-livemig-ext recover`` does
Nova's part of the completion.

The directory and the files in it are distrusted, because whatever is
there decides what nova-compute does at start:

* The directory is used only if it is a real directory (never a symbolic
  link) owned by the user nova-compute runs as and not writable by group
  or others; it is created with mode 0700 when missing. Anything else is
  reported with one ERROR line and the store behaves as if it held no
  record: nova-compute still starts, and writing a record raises
  ``StoreUnavailable``, which the driver logs.
* Every file is reached relative to the directory's descriptor, without
  following symbolic links. A record that is not a regular file of that
  user (a link, a FIFO, a device, ...) is never opened; a record is read
  with ``O_NONBLOCK`` and at most ``MAX_RECORD_BYTES`` + 1 bytes.
* A record that cannot be used is not deleted: it is renamed to
  ``<uuid>.json.corrupt-<UTC time>`` in the same directory and reported at
  ERROR with both paths, and ``read()`` returns None for it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import stat
import time
from typing import Any

LOG = logging.getLogger(__name__)

DIR_NAME = 'livemig_ext'
SUFFIX = '.json'
# A record holds a few KiB (migrate_data and the migrate call); anything
# beyond this is not one of ours.
MAX_RECORD_BYTES = 1024 * 1024
# <uuid>.json.corrupt-20250101T120000Z: a record set aside, never listed.
CORRUPT_MARK = '.corrupt-'
TMP_PREFIX = '.tmp-'

_UUID = ('[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-'
         '[0-9a-fA-F]{12}')
_UUID_RE = re.compile(_UUID)
_RECORD_NAME = re.compile('(%s)%s' % (_UUID, re.escape(SUFFIX)))

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = (os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
               | os.O_CLOEXEC)
_TMP_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
              | os.O_CLOEXEC)

_JSON_TYPES = ((bool, 'boolean'), (int, 'number'), (float, 'number'),
               (str, 'string'), (list, 'array'), (type(None), 'null'))


class StoreUnavailable(OSError):
    """The record directory cannot be used safely: nothing is kept there."""


class _Unusable(Exception):
    """A record that must not be used; the argument says why."""


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISREG, 'a regular file'),
                       (stat.S_ISLNK, 'a symbolic link'),
                       (stat.S_ISDIR, 'a directory'),
                       (stat.S_ISFIFO, 'a FIFO'),
                       (stat.S_ISCHR, 'a character device'),
                       (stat.S_ISBLK, 'a block device'),
                       (stat.S_ISSOCK, 'a socket')):
        if test(mode):
            return kind
    return 'of file type %o' % stat.S_IFMT(mode)


def _json_type(value: Any) -> str:
    for python_type, name in _JSON_TYPES:
        if isinstance(value, python_type):
            return name
    return type(value).__name__


class RecordStore:
    """One JSON file per instance uuid in ``directory`` (created on demand).

    Never raises from construction, ``instance_uuids()``, ``read()`` or
    ``remove()`` because of what it finds on disk (``remove()`` may still
    raise when an existing record cannot be unlinked); ``write()`` and
    ``update()`` raise when the record cannot be kept.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        # The refusal last logged, so that each is logged once.
        self._reported: str | None = None
        self.problem()

    # --- the directory ---------------------------------------------------

    def problem(self) -> str | None:
        """Why the directory is refused (one line, logged), or None."""
        try:
            fd = self._open_dir(create=False)
        except StoreUnavailable as e:
            return str(e)
        if fd is not None:
            os.close(fd)
        return None

    def _refuse(self, why: str) -> StoreUnavailable:
        message = ('nova-livemig-ext: refusing the live migration record '
                   'directory %s: %s; no record is read or kept there (so '
                   'interrupted live migrations are not finished at start) '
                   'until it is a directory owned by uid %d with mode 0700'
                   % (self.directory, why, os.geteuid()))
        if message != self._reported:
            LOG.error('%s', message)
            self._reported = message
        return StoreUnavailable(message)

    def _why_not_opened(self, error: OSError) -> str:
        try:
            st = os.lstat(self.directory)
        except OSError:
            return 'it cannot be opened: %s' % (error.strerror or error)
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(self.directory)
            except OSError:
                target = '?'
            return 'it is a symbolic link (to %s), not a directory' % target
        if not stat.S_ISDIR(st.st_mode):
            return 'it is %s, not a directory' % _file_kind(st.st_mode)
        return 'it cannot be opened: %s' % (error.strerror or error)

    @staticmethod
    def _why_untrusted(st: os.stat_result, what: str) -> str | None:
        if st.st_uid != os.geteuid():
            return ('%s belongs to uid %d, not to uid %d that nova-compute '
                    'runs as' % (what, st.st_uid, os.geteuid()))
        if st.st_mode & 0o022:
            return ('%s is writable by group or others (mode %04o)'
                    % (what, stat.S_IMODE(st.st_mode)))
        return None

    def _open_dir(self, create: bool) -> int | None:
        """The directory's descriptor once checked; None if it is missing.

        Raises ``StoreUnavailable`` (logged once) when it cannot be used.
        """
        try:
            try:
                fd = os.open(self.directory, _DIR_FLAGS)
            except FileNotFoundError:
                if not create:
                    self._reported = None
                    return None
                parent = os.path.dirname(self.directory)
                if parent:
                    os.makedirs(parent, exist_ok=True)
                try:
                    os.mkdir(self.directory, 0o700)
                except FileExistsError:
                    pass  # made meanwhile: checked as any other
                fd = os.open(self.directory, _DIR_FLAGS)
        except (OSError, ValueError) as e:
            why = (self._why_not_opened(e) if isinstance(e, OSError)
                   else 'it cannot be opened: %s' % e)
            raise self._refuse(why) from e
        try:
            why_not = self._why_untrusted(os.fstat(fd), 'it')
        except OSError as e:
            why_not = 'it cannot be examined: %s' % (e.strerror or e)
        if why_not is not None:
            os.close(fd)
            raise self._refuse(why_not)
        self._reported = None
        return fd

    # --- names -------------------------------------------------------------

    @staticmethod
    def _name(instance_uuid: str) -> str:
        if not isinstance(instance_uuid, str) or not _UUID_RE.fullmatch(
                instance_uuid):
            raise ValueError('not an instance uuid: %r' % (instance_uuid,))
        return instance_uuid + SUFFIX

    def path(self, instance_uuid: str) -> str:
        return os.path.join(self.directory, self._name(instance_uuid))

    # --- records -----------------------------------------------------------

    def write(self, instance_uuid: str, record: dict[str, Any]) -> None:
        """Replace the record atomically (a crash leaves old or new)."""
        name = self._name(instance_uuid)
        data = json.dumps(record).encode('utf-8')
        if len(data) > MAX_RECORD_BYTES:
            raise ValueError('the live migration record of %s would take %d '
                             'bytes, more than %d' % (
                                 instance_uuid, len(data), MAX_RECORD_BYTES))
        dir_fd = self._open_dir(create=True)
        assert dir_fd is not None  # created, or refused
        try:
            tmp = '%s%s-%s' % (TMP_PREFIX, instance_uuid,
                               secrets.token_hex(8))
            fd = os.open(tmp, _TMP_FLAGS, 0o600, dir_fd=dir_fd)
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dir_fd)
                except OSError:
                    pass
                raise
            try:
                os.fsync(dir_fd)  # the rename itself
            except OSError:
                pass
        finally:
            os.close(dir_fd)

    def update(self, instance_uuid: str, **changes: Any) -> None:
        record = self.read(instance_uuid) or {}
        record.update(changes)
        self.write(instance_uuid, record)

    def read(self, instance_uuid: str) -> dict[str, Any] | None:
        """The record, or None: missing, refused, or set aside as unusable."""
        try:
            name = self._name(instance_uuid)
        except ValueError as e:
            LOG.warning('Unreadable live migration record for %s: %s',
                        instance_uuid, e)
            return None
        try:
            dir_fd = self._open_dir(create=False)
        except StoreUnavailable:
            return None
        if dir_fd is None:
            return None
        try:
            return self._read_at(dir_fd, name)
        finally:
            os.close(dir_fd)

    def _read_at(self, dir_fd: int, name: str) -> dict[str, Any] | None:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as e:
            LOG.error('nova-livemig-ext: the live migration record %s cannot '
                      'be examined: %s', os.path.join(self.directory, name),
                      e.strerror or e)
            return None
        why = self._why_not_a_record(dir_fd, name, st)
        if why is None:
            try:
                return self._load(dir_fd, name)
            except FileNotFoundError:
                return None
            except _Unusable as e:
                why = str(e)
            except OSError as e:
                why = 'it cannot be read: %s' % (e.strerror or e)
        self._set_aside(dir_fd, name, why)
        return None

    def _why_not_a_record(self, dir_fd: int, name: str,
                          st: os.stat_result) -> str | None:
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(name, dir_fd=dir_fd)
            except OSError:
                target = '?'
            return ('it is a symbolic link (to %s), not a file; not followed'
                    % target)
        if not stat.S_ISREG(st.st_mode):
            return 'it is %s, not a regular file; not opened' % _file_kind(
                st.st_mode)
        return self._why_untrusted(st, 'it')

    def _load(self, dir_fd: int, name: str) -> dict[str, Any]:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        try:
            # What was opened, not what was looked at before.
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _Unusable('it is %s, not a regular file' % _file_kind(
                    st.st_mode))
            why = self._why_untrusted(st, 'it')
            if why is not None:
                raise _Unusable(why)
            chunks = []
            size = 0
            while size <= MAX_RECORD_BYTES:
                chunk = os.read(fd, MAX_RECORD_BYTES + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
        if size > MAX_RECORD_BYTES:
            raise _Unusable('it is larger than %d bytes' % MAX_RECORD_BYTES)
        try:
            data = json.loads(b''.join(chunks))
        except (ValueError, RecursionError) as e:
            raise _Unusable('it is not valid JSON: %s' % (
                str(e) or type(e).__name__)) from e
        if not isinstance(data, dict):
            raise _Unusable('it holds a JSON %s, not an object'
                            % _json_type(data))
        return data

    def _set_aside(self, dir_fd: int, name: str, why: str) -> None:
        """Rename an unusable record out of the way, and say so."""
        path = os.path.join(self.directory, name)
        stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())
        aside = '%s%s%s' % (name, CORRUPT_MARK, stamp)
        for n in range(1, 1000):
            try:
                os.stat(aside, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                break
            aside = '%s%s%s.%d' % (name, CORRUPT_MARK, stamp, n)
        try:
            os.rename(name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as e:
            LOG.error('nova-livemig-ext: the live migration record %s is '
                      'unusable (%s) and could not be set aside (%s); an '
                      'interrupted migration of that instance is not '
                      'finished', path, why, e.strerror or e)
            return
        LOG.error('nova-livemig-ext: the live migration record %s is '
                  'unusable (%s); kept as %s. An interrupted migration of '
                  'that instance is not finished: check the instance and its '
                  'migration (see the troubleshooting guide)', path, why,
                  os.path.join(self.directory, aside))

    def remove(self, instance_uuid: str) -> None:
        name = self._name(instance_uuid)
        try:
            dir_fd = self._open_dir(create=False)
        except StoreUnavailable:
            return  # no record is available there: nothing to remove
        if dir_fd is None:
            return
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        finally:
            os.close(dir_fd)

    def instance_uuids(self) -> list[str]:
        """Every instance with a record left, oldest file first.

        Only ``<uuid>.json`` names count; whatever they are is for
        ``read()`` to judge (and set aside).
        """
        try:
            dir_fd = self._open_dir(create=False)
        except StoreUnavailable:
            return []
        if dir_fd is None:
            return []
        try:
            try:
                names = os.listdir(dir_fd)
            except OSError as e:
                self._refuse('it cannot be listed: %s' % (e.strerror or e))
                return []
            found = []
            for name in names:
                match = _RECORD_NAME.fullmatch(name)
                if match is None:
                    continue
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except OSError:
                    continue  # gone meanwhile
                found.append((st.st_mtime_ns, name, match.group(1)))
            return [uuid for _, _, uuid in sorted(found)]
        finally:
            os.close(dir_fd)

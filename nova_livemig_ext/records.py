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
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

LOG = logging.getLogger(__name__)

DIR_NAME = 'livemig_ext'
SUFFIX = '.json'


class RecordStore:
    """One JSON file per instance uuid in ``directory`` (created on demand)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def path(self, instance_uuid: str) -> str:
        if not instance_uuid or os.sep in instance_uuid or (
                instance_uuid.startswith('.')):
            raise ValueError('not an instance uuid: %r' % instance_uuid)
        return os.path.join(self.directory, instance_uuid + SUFFIX)

    def write(self, instance_uuid: str, record: dict[str, Any]) -> None:
        """Replace the record atomically (a crash leaves old or new)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix='.tmp-')
        try:
            with os.fdopen(fd, 'w') as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(instance_uuid))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def update(self, instance_uuid: str, **changes: Any) -> None:
        record = self.read(instance_uuid) or {}
        record.update(changes)
        self.write(instance_uuid, record)

    def read(self, instance_uuid: str) -> dict[str, Any] | None:
        try:
            with open(self.path(instance_uuid)) as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            LOG.warning('Unreadable live migration record for %s: %s',
                        instance_uuid, e)
            return None
        return data if isinstance(data, dict) else None

    def remove(self, instance_uuid: str) -> None:
        try:
            os.unlink(self.path(instance_uuid))
        except FileNotFoundError:
            pass

    def instance_uuids(self) -> list[str]:
        """Every instance with a record left, oldest file first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        found = [n[:-len(SUFFIX)] for n in names
                 if n.endswith(SUFFIX) and not n.startswith('.')]
        return sorted(found, key=lambda u: os.path.getmtime(self.path(u)))

"""Typed samples of a libvirt migration job.

``virDomainGetJobStats`` returns a flat dict whose keys depend on the
libvirt and QEMU versions and on the phase of the job: before the first
bitmap sync there is no dirty rate, a paused copy has no iteration, and a
job that has just ended reports little more than its type.  This module
turns that dict into one :class:`JobSample` with units in the field names,
so nothing downstream ever looks a key up again.

Key names are libvirt's ``VIR_DOMAIN_JOB_*`` typed-parameter names
(``include/libvirt/libvirt-domain.h``); they are spelled out here so that the
pure core does not import libvirt.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

# QEMU tracks dirty memory in target pages; libvirt reports the page size
# alongside the rate, and older versions leave it out.  x86 pages are 4 KiB.
DEFAULT_PAGE_SIZE_BYTES = 4096

MS_PER_S = 1000.0

KEY_TYPE = 'type'
KEY_TIME_ELAPSED_MS = 'time_elapsed'
KEY_DATA_TOTAL = 'data_total'
KEY_DATA_PROCESSED = 'data_processed'
KEY_DATA_REMAINING = 'data_remaining'
KEY_MEMORY_TOTAL = 'memory_total'
KEY_MEMORY_PROCESSED = 'memory_processed'
KEY_MEMORY_REMAINING = 'memory_remaining'
KEY_MEMORY_BPS = 'memory_bps'
KEY_MEMORY_DIRTY_RATE = 'memory_dirty_rate'
KEY_MEMORY_PAGE_SIZE = 'memory_page_size'
KEY_MEMORY_ITERATION = 'memory_iteration'
KEY_MEMORY_POSTCOPY_REQS = 'memory_postcopy_requests'
KEY_DOWNTIME_MS = 'downtime'
KEY_SETUP_TIME_MS = 'setup_time'
KEY_AUTO_CONVERGE_THROTTLE = 'auto_converge_throttle'
KEY_DISK_TOTAL = 'disk_total'
KEY_DISK_REMAINING = 'disk_remaining'
KEY_ERRMSG = 'errmsg'


class JobType(enum.IntEnum):
    """libvirt's ``virDomainJobType`` values."""

    NONE = 0
    BOUNDED = 1
    UNBOUNDED = 2
    COMPLETED = 3
    FAILED = 4
    CANCELLED = 5


ACTIVE_JOB_TYPES = frozenset({JobType.BOUNDED, JobType.UNBOUNDED})
FINISHED_JOB_TYPES = frozenset(
    {JobType.COMPLETED, JobType.FAILED, JobType.CANCELLED})


@dataclasses.dataclass(frozen=True)
class JobSample:
    """One reading of a migration job, in bytes, seconds and milliseconds.

    Counters libvirt did not report are 0; readings whose absence means
    "not measured yet" (dirty rate, iteration, expected downtime, throttle)
    are ``None`` so that a missing value is never mistaken for a zero.
    """

    job_type: JobType
    elapsed_s: float | None = None
    data_total_bytes: int = 0
    data_processed_bytes: int = 0
    data_remaining_bytes: int = 0
    memory_total_bytes: int = 0
    memory_processed_bytes: int = 0
    memory_remaining_bytes: int = 0
    disk_total_bytes: int = 0
    disk_remaining_bytes: int = 0
    memory_bandwidth_bytes_s: float | None = None
    dirty_rate_bytes_s: float | None = None
    page_size_bytes: int = DEFAULT_PAGE_SIZE_BYTES
    iteration: int | None = None
    # For a running job this is QEMU's expected downtime; for completed
    # statistics it is the downtime the guest had.
    downtime_ms: float | None = None
    setup_time_ms: float | None = None
    auto_converge_throttle_pct: int | None = None
    postcopy_requests: int | None = None
    error_message: str | None = None

    @property
    def is_active(self) -> bool:
        """Is the job still copying (as opposed to not started or ended)?"""
        return self.job_type in ACTIVE_JOB_TYPES

    @property
    def is_finished(self) -> bool:
        """Does this sample carry the final state of a job?"""
        return self.job_type in FINISHED_JOB_TYPES


def _number(stats: Mapping[str, object], key: str) -> float | None:
    value = stats.get(key)
    # bool is an int subclass; a flag is never a measurement.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _count(stats: Mapping[str, object], key: str) -> int | None:
    value = _number(stats, key)
    return None if value is None else int(value)


def _bytes(stats: Mapping[str, object], key: str) -> int:
    value = _count(stats, key)
    return 0 if value is None or value < 0 else value


def job_type_of(stats: Mapping[str, object]) -> JobType:
    """The job type in a jobStats dict; unknown or missing means NONE."""
    value = _count(stats, KEY_TYPE)
    if value is None:
        return JobType.NONE
    try:
        return JobType(value)
    except ValueError:
        return JobType.NONE


def page_size_of(stats: Mapping[str, object]) -> int:
    """The page size the dirty rate is counted in."""
    size = _count(stats, KEY_MEMORY_PAGE_SIZE)
    return size if size is not None and size > 0 else DEFAULT_PAGE_SIZE_BYTES


def dirty_rate_bytes_s_of(stats: Mapping[str, object]) -> float | None:
    """Dirty rate in bytes/s; libvirt reports it in pages/s."""
    pages_s = _number(stats, KEY_MEMORY_DIRTY_RATE)
    if pages_s is None or pages_s < 0:
        return None
    return pages_s * page_size_of(stats)


def elapsed_s_of(stats: Mapping[str, object]) -> float | None:
    """Time since the job started, in seconds (libvirt reports ms)."""
    elapsed_ms = _number(stats, KEY_TIME_ELAPSED_MS)
    return None if elapsed_ms is None else elapsed_ms / MS_PER_S


def sample_from_job_stats(stats: Mapping[str, object]) -> JobSample:
    """Build a :class:`JobSample` from a ``virDomain.jobStats()`` dict."""
    errmsg = stats.get(KEY_ERRMSG)
    bandwidth = _number(stats, KEY_MEMORY_BPS)
    return JobSample(
        job_type=job_type_of(stats),
        elapsed_s=elapsed_s_of(stats),
        data_total_bytes=_bytes(stats, KEY_DATA_TOTAL),
        data_processed_bytes=_bytes(stats, KEY_DATA_PROCESSED),
        data_remaining_bytes=_bytes(stats, KEY_DATA_REMAINING),
        memory_total_bytes=_bytes(stats, KEY_MEMORY_TOTAL),
        memory_processed_bytes=_bytes(stats, KEY_MEMORY_PROCESSED),
        memory_remaining_bytes=_bytes(stats, KEY_MEMORY_REMAINING),
        disk_total_bytes=_bytes(stats, KEY_DISK_TOTAL),
        disk_remaining_bytes=_bytes(stats, KEY_DISK_REMAINING),
        memory_bandwidth_bytes_s=(
            bandwidth if bandwidth is not None and bandwidth >= 0 else None),
        dirty_rate_bytes_s=dirty_rate_bytes_s_of(stats),
        page_size_bytes=page_size_of(stats),
        iteration=_count(stats, KEY_MEMORY_ITERATION),
        downtime_ms=_number(stats, KEY_DOWNTIME_MS),
        setup_time_ms=_number(stats, KEY_SETUP_TIME_MS),
        auto_converge_throttle_pct=_count(stats, KEY_AUTO_CONVERGE_THROTTLE),
        postcopy_requests=_count(stats, KEY_MEMORY_POSTCOPY_REQS),
        error_message=errmsg if isinstance(errmsg, str) else None,
    )

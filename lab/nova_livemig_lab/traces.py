"""Record jobStats traces of real migrations for the controller's replay tests.

``python -m nova_livemig_lab record-traces`` boots one guest per recipe
on host A, migrates it to host B over the shaped link and writes
``tests/traces/<name>.json``: metadata (how it was made), the list of polls
``{"t": seconds, "stats": jobStats}``, the actions taken on the job, the
completed-job statistics and the guest-side measurements.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nova_livemig_ext import safefile
from nova_livemig_lab import guest as lab_guest
from nova_livemig_lab import hosts, measure
from nova_livemig_lab.config import LabConfig
from nova_livemig_lab.errors import LabError
from nova_livemig_lab.lock import LabLock

LOG = logging.getLogger(__name__)

FORMAT_VERSION = 1
WORKING_SET_MB = 120
FAST_DIRTY_RATE_MB_S = 40
SLOW_DIRTY_RATE_MB_S = 4


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one trace is made."""

    name: str
    description: str
    flag_names: tuple[str, ...]
    dirty_rate_mb_s: int
    dirty_mb: int = WORKING_SET_MB
    params: tuple[tuple[str, int], ...] = ()
    # Builds the on_poll actions; receives the list that records them.
    actions: Callable[[measure.Events], measure.OnPoll | None] = lambda _events: None
    timeout_s: float = 300.0


RECIPES: tuple[Recipe, ...] = (
    Recipe("converging", "LIVE, dirty rate well below the link: converges in a few passes.",
           ("LIVE", "PEER2PEER"), SLOW_DIRTY_RATE_MB_S),
    Recipe("non-converging",
           "LIVE, dirty rate above the link: passes never shrink; abortJob after 60 s.",
           ("LIVE", "PEER2PEER"), FAST_DIRTY_RATE_MB_S,
           actions=lambda events: measure.abort_after(60.0, events)),
    Recipe("auto-converge",
           "LIVE + AUTO_CONVERGE (initial 50 %, increment 20 %), dirty rate above the link: "
           "QEMU throttles the vCPU until it converges.",
           ("LIVE", "PEER2PEER", "AUTO_CONVERGE"), FAST_DIRTY_RATE_MB_S,
           params=(("auto_converge.initial", 50), ("auto_converge.increment", 20))),
    Recipe("post-copy",
           "LIVE + POSTCOPY, dirty rate above the link; migrateStartPostCopy once the first "
           "pass is done.",
           ("LIVE", "PEER2PEER", "POSTCOPY"), FAST_DIRTY_RATE_MB_S,
           actions=lambda events: measure.postcopy_after_first_pass(events)),
    Recipe("paused", "No LIVE flag: the guest is paused for the whole copy.",
           ("PEER2PEER",), SLOW_DIRTY_RATE_MB_S),
    Recipe("downtime-raised",
           "LIVE, dirty rate above the link; migrateSetMaxDowntime(10000 ms) at 20 s lets "
           "the stop-and-copy take the whole working set.",
           ("LIVE", "PEER2PEER"), FAST_DIRTY_RATE_MB_S,
           actions=lambda events: measure.set_max_downtime_after(20.0, 10000, events)),
)


def _versions(config: LabConfig) -> dict[str, int]:
    import libvirt
    conn = libvirt.open(config.host_a.uri)
    try:
        return {"qemu": conn.getVersion(), "libvirt": conn.getLibVersion()}
    finally:
        conn.close()


def record(config: LabConfig, recipe: Recipe) -> dict[str, Any]:
    """Run one recipe and return the trace document."""
    events: measure.Events = []
    guest = lab_guest.boot(config, config.host_a, f"trace-{recipe.name}-{int(time.time())}",
                           recipe.dirty_mb, recipe.dirty_rate_mb_s)
    try:
        result = measure.migrate_and_measure(
            config, guest, measure.flags_from_names(recipe.flag_names), dict(recipe.params),
            recipe.actions(events), timeout_s=recipe.timeout_s)
    finally:
        lab_guest.destroy(guest, config)
    return _document(config, recipe, result, events)


def _document(config: LabConfig, recipe: Recipe, result: measure.MigrationResult,
              events: measure.Events) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "name": recipe.name,
        "description": recipe.description,
        "metadata": {
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": f"python -m nova_livemig_lab record-traces --only {recipe.name}",
            "flags": result.flags,
            "flag_names": list(result.flag_names),
            "params": dict(result.params),
            "dirty_mb": recipe.dirty_mb,
            "dirty_rate_mb_s": recipe.dirty_rate_mb_s,
            "guest_memory_mib": lab_guest.GUEST_MEMORY_MIB,
            "link_rate_mbit": result.link_rate_mbit,
            "link_measured_mb_s": result.link_measured_mb_s,
            "poll_interval_s": measure.POLL_INTERVAL_S,
            "versions": _versions(config),
        },
        "actions": events,
        "trace": [{"t": poll.elapsed_s, "stats": dict(poll.stats)} for poll in result.run.polls],
        "error": result.run.error,
        "completed_stats": dict(result.completed_stats or {}),
        "result": measure.summary(result),
    }


def record_all(config: LabConfig, output_dir: Path,
               only: Sequence[str] | None = None) -> list[Path]:
    """Record every recipe (or those named in ``only``) into ``output_dir``."""
    recipes = [r for r in RECIPES if not only or r.name in only]
    unknown = set(only or ()) - {r.name for r in RECIPES}
    if unknown:
        raise LabError(f"unknown traces {sorted(unknown)}; known: {[r.name for r in RECIPES]}")
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with LabLock(config):
        hosts.start(config)
        for recipe in recipes:
            LOG.info("recording trace %s", recipe.name)
            document = record(config, recipe)
            path = output_dir / f"{recipe.name}.json"
            safefile.atomic_write(path, (json.dumps(document, indent=1, sort_keys=False)
                                         + "\n").encode())
            LOG.info("wrote %s: %s", path, json.dumps(document["result"]))
            written.append(path)
    return written

"""Per-instance policy: flavor extra specs and image properties.

Keys are namespaced ``livemig_ext:<name>``. A flavor (set by the operator,
and checked by Nova's API through :mod:`nova_livemig_ext.extra_specs`) may
set any valid value the host has armed. An image property (set by whoever
uploads the image, often a tenant) may only make a migration more
conservative, within bounds the operator sets: a lower downtime ceiling,
fewer rungs, no post-copy, a shorter deadline that is never below
``[livemig_ext] image_deadline_floor_s``.

A key that is unknown, invalid or not allowed is ignored and reported (the
driver logs it as a warning with the key and why): instance keys never
refuse a migration, so nobody but the operator can stop a host from being
emptied for maintenance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

from nova_livemig_ext.policy import MigrationPolicy
from nova_livemig_ext.policy import RUNGS

PREFIX = 'livemig_ext:'
# Nova keeps an instance's image properties in system metadata under this.
IMAGE_SYSMETA_PREFIX = 'image_'

_TRUE = ('1', 'true', 'yes', 'on')
_FALSE = ('0', 'false', 'no', 'off')


@dataclass(frozen=True)
class InstanceKey:
    """One documented per-instance key."""

    name: str
    help: str


KEYS: tuple[InstanceKey, ...] = (
    InstanceKey('max_downtime_ms',
                'Downtime ceiling in ms, 100 to 60000. From an image it can '
                'only lower the host value.'),
    InstanceKey('ladder',
                'Comma-separated rungs (downtime, auto_converge, postcopy, '
                'pause, abort), each at most once, abort last. From an image '
                'it must keep a subset of the host ladder, in order. '
                'auto_converge must also be in the host ladder (its settings '
                'are checked there); postcopy is dropped where post-copy is '
                'not permitted.'),
    InstanceKey('permit_post_copy',
                'true or false. Can only turn post-copy off unless the host '
                'permits it.'),
    InstanceKey('completion_timeout_s_per_gib',
                'Deadline in seconds per GiB, 1 to 86400. From an image it '
                'can only shorten the host value, and the deadline it gives '
                'is never below [livemig_ext] image_deadline_floor_s.'),
)
KEY_NAMES = tuple(k.name for k in KEYS)


def _parse_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text.strip())
        if not low <= value <= high:
            raise ValueError('must be from %d to %d' % (low, high))
        return value
    return parse


def _parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError('must be true or false')


def _parse_ladder(text: str) -> tuple[str, ...]:
    rungs = tuple(r.strip() for r in text.split(',') if r.strip())
    unknown = [r for r in rungs if r not in RUNGS]
    if unknown:
        raise ValueError('unknown rung(s) %s; use %s' % (
            ', '.join(unknown), ', '.join(RUNGS)))
    if len(set(rungs)) != len(rungs):
        raise ValueError('a rung is listed more than once')
    if 'abort' in rungs and rungs[-1] != 'abort':
        raise ValueError("'abort' must be the last rung")
    return rungs


PARSERS: Mapping[str, Callable[[str], object]] = {
    'max_downtime_ms': _parse_int(100, 60000),
    'ladder': _parse_ladder,
    'permit_post_copy': _parse_bool,
    'completion_timeout_s_per_gib': _parse_int(1, 86400),
}


def _ours(source: Mapping[str, str]) -> dict[str, str]:
    return {k[len(PREFIX):]: v for k, v in source.items()
            if k.startswith(PREFIX)}


def image_properties(system_metadata: Mapping[str, str]) -> dict[str, str]:
    """Image properties as Nova keeps them in an instance's system metadata.
    """
    return {k[len(IMAGE_SYSMETA_PREFIX):]: v
            for k, v in system_metadata.items()
            if k.startswith(IMAGE_SYSMETA_PREFIX + PREFIX)}


def parse_value(name: str, text: str) -> object:
    """The value of key ``livemig_ext:<name>``; ValueError says why not."""
    parser = PARSERS.get(name)
    if parser is None:
        raise ValueError('unknown key (known: %s)' % ', '.join(
            PREFIX + n for n in KEY_NAMES))
    return parser(str(text))


@dataclass(frozen=True)
class Resolved:
    """An instance's policy, and the keys that were not applied as given.

    ``ignored`` has one sentence per such key, naming it and saying why;
    ``notes`` says what changed as a consequence of keys that were applied.
    """

    policy: MigrationPolicy
    ignored: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


class _Collector:

    def __init__(self) -> None:
        self.ignored: list[str] = []
        self.notes: list[str] = []

    def ignore(self, origin: str, name: str, text: str, why: str) -> None:
        self.ignored.append('%s %s%s = %r ignored: %s'
                            % (origin, PREFIX, name, text, why))


def _parse_all(source: Mapping[str, str], origin: str,
               out: _Collector) -> dict[str, tuple[object, str]]:
    values: dict[str, tuple[object, str]] = {}
    for name, text in sorted(_ours(source).items()):
        try:
            values[name] = (parse_value(name, text), text)
        except ValueError as e:
            out.ignore(origin, name, text, str(e))
    return values


def _drop_postcopy(policy: MigrationPolicy, why: str,
                   out: _Collector) -> MigrationPolicy:
    if 'postcopy' in policy.ladder:
        out.notes.append('postcopy rung removed: %s' % why)
        return policy.replace(ladder=tuple(r for r in policy.ladder
                                           if r != 'postcopy'))
    return policy


def _apply_flavor(host: MigrationPolicy,
                  flavor: Mapping[str, tuple[object, str]],
                  out: _Collector) -> MigrationPolicy:
    """Flavor keys: any valid value this host has armed."""
    origin = 'flavor extra spec'
    policy = host
    for name, (value, text) in sorted(flavor.items()):
        if name == 'permit_post_copy' and value and not host.permit_post_copy:
            out.ignore(origin, name, text,
                       'post-copy is not permitted on this host (it may lack '
                       'userfaultfd or its transport cannot run post-copy)')
            continue
        if (name == 'ladder' and isinstance(value, tuple)
                and 'auto_converge' in value
                and 'auto_converge' not in host.ladder):
            out.ignore(origin, name, text,
                       "'auto_converge' is not in this host's ladder, so its "
                       'settings were never checked here')
            continue
        policy = policy.replace(**{name: value})
    if not policy.permit_post_copy:
        policy = _drop_postcopy(policy, 'post-copy is not permitted for this '
                                'instance', out)
    return policy


def _image_deadline(policy: MigrationPolicy, per_gib: int, size_gib: float,
                    text: str, out: _Collector) -> int:
    """An image's shorter deadline, raised to the operator's floor."""
    size = max(size_gib, 1.0 / 1024)
    floor_per_gib = math.ceil(policy.image_deadline_floor_s / size)
    chosen = max(per_gib, floor_per_gib)
    if policy.completion_timeout_s_per_gib > 0:
        chosen = min(policy.completion_timeout_s_per_gib, chosen)
    if chosen != per_gib:
        out.notes.append(
            'image property %scompletion_timeout_s_per_gib = %r would give '
            'a %.1f s deadline for %.2f GiB, below the floor of %d s '
            '([livemig_ext] image_deadline_floor_s): using %d s/GiB'
            % (PREFIX, text, per_gib * size, size,
               policy.image_deadline_floor_s, chosen))
    return chosen


def _apply_image(policy: MigrationPolicy,
                 image: Mapping[str, tuple[object, str]], size_gib: float,
                 out: _Collector) -> MigrationPolicy:
    """Image keys: only what tightens the policy, within the floor."""
    origin = 'image property'
    for name, (value, text) in sorted(image.items()):
        if name == 'max_downtime_ms':
            assert isinstance(value, int)
            if value > policy.max_downtime_ms:
                out.ignore(origin, name, text,
                           'above the %d ms ceiling of this host; an image '
                           'may only lower it' % policy.max_downtime_ms)
                continue
            policy = policy.replace(max_downtime_ms=value)
        elif name == 'ladder':
            assert isinstance(value, tuple)
            kept = tuple(r for r in policy.ladder if r in value)
            if value != kept:
                out.ignore(origin, name, text,
                           'not a subset of %s in the same order; an image '
                           'may only remove rungs' % ','.join(policy.ladder))
                continue
            policy = policy.replace(ladder=value)
        elif name == 'permit_post_copy':
            if value and not policy.permit_post_copy:
                out.ignore(origin, name, text,
                           'post-copy is not permitted here; an image may '
                           'only turn it off')
                continue
            if not value:
                policy = _drop_postcopy(
                    policy.replace(permit_post_copy=False),
                    'post-copy is turned off by the image', out)
        elif name == 'completion_timeout_s_per_gib':
            assert isinstance(value, int)
            host_cap = policy.completion_timeout_s_per_gib
            if host_cap > 0 and value > host_cap:
                out.ignore(origin, name, text,
                           'longer than the %d s/GiB of this host; an image '
                           'may only shorten the deadline'
                           % policy.completion_timeout_s_per_gib)
                continue
            policy = policy.replace(
                completion_timeout_s_per_gib=_image_deadline(
                    policy, value, size_gib, text, out))
    return policy


def resolve(host: MigrationPolicy, flavor_specs: Mapping[str, str],
            system_metadata: Mapping[str, str],
            size_gib: float) -> Resolved:
    """The host policy with one instance's flavor and image keys applied.

    ``size_gib`` is what the migration moves (memory, plus disks for a
    block migration): the image deadline's floor is in seconds. Never
    raises for a key's value: bad keys are ignored and listed.
    """
    if host.mode == 'upstream':
        return Resolved(host)
    out = _Collector()
    flavor = _parse_all(flavor_specs, 'flavor extra spec', out)
    policy = _apply_flavor(host, flavor, out)
    image_keys = image_properties(system_metadata)
    if host.ignore_image_properties:
        for name, text in sorted(_ours(image_keys).items()):
            out.ignore('image property', name, text,
                       '[livemig_ext] ignore_image_properties is set')
    else:
        image = _parse_all(image_keys, 'image property', out)
        policy = _apply_image(policy, image, size_gib, out)
    # A lowered ceiling drags the starting limit down with it.
    policy = policy.replace(initial_downtime_ms=min(
        policy.initial_downtime_ms, policy.max_downtime_ms))
    return Resolved(policy, tuple(out.ignored), tuple(out.notes))


def instance_policy(host: MigrationPolicy, flavor_specs: Mapping[str, str],
                    system_metadata: Mapping[str, str],
                    size_gib: float = 1.0) -> MigrationPolicy:
    """:func:`resolve`'s policy alone."""
    return resolve(host, flavor_specs, system_metadata, size_gib).policy

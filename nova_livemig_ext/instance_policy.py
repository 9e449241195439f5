"""Per-instance policy: flavor extra specs and image properties.

Keys are namespaced ``livemig_ext:<name>``. A flavor (set by the operator,
and checked by Nova's API through :mod:`nova_livemig_ext.extra_specs`) may
set any valid value the host has armed.

An image property is set by whoever uploads the image, often a tenant, and
a tenant must not be able to make their own instance unmovable: no image
property may make a migration abort that would otherwise complete. So an
image may only ask for what costs no way of completing:

* ``max_downtime_ms``: a lower *starting* downtime limit, where the ladder
  has the ``downtime`` rung to raise it again up to the host's ceiling (the
  ceiling itself stays the operator's);
* ``completion_timeout_s_per_gib``: a *longer* deadline, never beyond the
  operator's caps (``completion_timeout_max_s`` and the host's own per-GiB
  cap); never a shorter one;
* ``permit_post_copy=false``: only where the ladder does not use post-copy
  (it then only leaves ``VIR_MIGRATE_POSTCOPY`` unarmed);
* ``ladder``: never. Every rung is a remedy the operator chose; removing one
  can leave a guest with no way to complete.

A key that is unknown, invalid or not allowed is ignored and reported (the
driver logs it as a warning with the key and why): instance keys never
refuse a migration, so nobody but the operator can stop a host from being
emptied for maintenance. Tenant text in those reports is quoted, escaped
and cut short (:func:`shown`): a value cannot forge or flood a log line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Mapping

from nova_livemig_ext import job as livemig_job
from nova_livemig_ext.policy import MigrationPolicy
from nova_livemig_ext.policy import RUNGS

PREFIX = 'livemig_ext:'
# Nova keeps an instance's image properties in system metadata under this.
IMAGE_SYSMETA_PREFIX = 'image_'

_TRUE = ('1', 'true', 'yes', 'on')
_FALSE = ('0', 'false', 'no', 'off')

# The most of a key's name or value a log line or a fault repeats.
SHOWN_CHARS = 64
# A name or a word shown as it is: nothing in it can disturb a log line.
_PLAIN_WORD = re.compile(r'[A-Za-z0-9_]{1,%d}\Z' % SHOWN_CHARS)
# A whole number in ASCII digits (int() also takes '4_00', '٤٠٠', '４００').
_ASCII_INT = re.compile(r'[0-9]{1,9}\Z')
# Characters str.strip() removes from a value: ASCII blanks only.
_BLANKS = ' \t\r\n'


def shown(text: object, limit: int = SHOWN_CHARS) -> str:
    """``text`` quoted for a log line or a fault.

    Escaped as Python's ``repr`` escapes (a newline becomes ``\\n``, a
    terminal escape ``\\x1b``, a right-to-left mark ``\\u200f``) and cut to
    ``limit`` characters, with the full length said: whatever a tenant puts
    in an image property, it cannot start a new log line, rewrite one on a
    terminal or flood the log.
    """
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return '%r... (%d characters)' % (text[:limit], len(text))


def _word(text: str) -> str:
    """A name or a rung as it is when plain, else :func:`shown`."""
    return text if _PLAIN_WORD.match(text) else shown(text)


def key_name(name: str) -> str:
    """``livemig_ext:<name>`` for a log line or a fault."""
    if _PLAIN_WORD.match(name):
        return PREFIX + name
    return shown(PREFIX + name)


@dataclass(frozen=True)
class InstanceKey:
    """One documented per-instance key."""

    name: str
    help: str


KEYS: tuple[InstanceKey, ...] = (
    InstanceKey('max_downtime_ms',
                'Downtime ceiling in ms, 100 to 60000. From an image it is '
                'only the starting limit, at most the host ceiling, and only '
                'where the ladder has the downtime rung (which may still '
                'raise the limit to the host ceiling to complete).'),
    InstanceKey('ladder',
                'Comma-separated rungs (downtime, auto_converge, postcopy, '
                'pause, abort), each at most once, abort last. '
                'auto_converge must also be in the host ladder (its settings '
                'are checked there); postcopy is dropped where post-copy is '
                'not permitted. Flavor only: an image property is ignored.'),
    InstanceKey('permit_post_copy',
                'true or false. Can only turn post-copy off unless the host '
                'permits it. From an image, false applies only where the '
                'ladder has no postcopy rung.'),
    InstanceKey('completion_timeout_s_per_gib',
                'Deadline in seconds per GiB, 1 to 86400. From a flavor it '
                'caps the deadline. From an image it can only lengthen it, '
                'within [livemig_ext] completion_timeout_max_s and the host '
                'cap.'),
)
KEY_NAMES = tuple(k.name for k in KEYS)


def _parse_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        digits = text.strip(_BLANKS)
        if not _ASCII_INT.match(digits):
            raise ValueError('not a whole number in ASCII digits from %d to '
                             '%d' % (low, high))
        value = int(digits)
        if not low <= value <= high:
            raise ValueError('must be from %d to %d' % (low, high))
        return value
    return parse


def _parse_bool(text: str) -> bool:
    word = text.strip(_BLANKS).lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError('must be true or false')


def _parse_ladder(text: str) -> tuple[str, ...]:
    rungs = tuple(r.strip(_BLANKS) for r in text.split(',')
                  if r.strip(_BLANKS))
    unknown = [r for r in rungs if r not in RUNGS]
    if unknown:
        named = ', '.join(_word(r) for r in unknown[:3])
        if len(unknown) > 3:
            named += ' and %d more' % (len(unknown) - 3)
        raise ValueError('unknown rung(s) %s; use %s' % (
            named, ', '.join(RUNGS)))
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
    """The value of key ``livemig_ext:<name>``; ValueError says why not.

    The reason never repeats the value itself (the caller shows it, with
    :func:`shown`), so it is safe in a log line or an API fault.
    """
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
    Both hold tenant text only as :func:`shown` gives it.
    """

    policy: MigrationPolicy
    ignored: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


class _Collector:

    def __init__(self) -> None:
        self.ignored: list[str] = []
        self.notes: list[str] = []

    def ignore(self, origin: str, name: str, text: str, why: str) -> None:
        self.ignored.append('%s %s = %s ignored: %s'
                            % (origin, key_name(name), shown(text), why))


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


def _image_downtime(policy: MigrationPolicy, value: int, text: str,
                    out: _Collector) -> MigrationPolicy:
    """A lower starting limit; the ceiling stays the operator's."""
    origin, name = 'image property', 'max_downtime_ms'
    if value > policy.max_downtime_ms:
        out.ignore(origin, name, text,
                   'above the %d ms ceiling of this host; an image may only '
                   'lower it' % policy.max_downtime_ms)
        return policy
    if 'downtime' not in policy.ladder:
        out.ignore(origin, name, text,
                   'the ladder has no downtime rung to raise the limit '
                   'again, so a lower limit could keep the migration from '
                   'ever completing')
        return policy
    if value < policy.initial_downtime_ms:
        out.notes.append(
            'image property %s = %s: starting at a downtime limit of %d ms; '
            'the downtime rung may still raise it to the host ceiling of '
            '%d ms to complete the migration'
            % (key_name(name), shown(text), value, policy.max_downtime_ms))
        return policy.replace(initial_downtime_ms=value)
    return policy


def _image_deadline(policy: MigrationPolicy, per_gib: int, size_gib: float,
                    text: str, out: _Collector) -> MigrationPolicy:
    """A longer deadline (a higher floor), within the operator's caps.

    The deadline follows the link, never below ``deadline_floor_s`` and
    never above the cap (:func:`nova_livemig_ext.job.deadline_s`); an
    image raises the floor, so it can give a slow guest more time and
    never take time away.
    """
    name = 'completion_timeout_s_per_gib'
    size = max(size_gib, 1.0 / 1024)
    cap_s = livemig_job.deadline_s(policy, size_gib)
    asked_s = per_gib * size
    floor_s = min(max(float(policy.deadline_floor_s), asked_s), cap_s)
    if floor_s <= policy.deadline_floor_s:
        return policy
    out.notes.append(
        'image property %s = %s: the deadline is at least %.0f s for %.2f '
        'GiB%s' % (key_name(name), shown(text), floor_s, size,
                   ", this host's cap" if floor_s < asked_s else ''))
    return policy.replace(deadline_floor_s=int(math.ceil(floor_s)))


def _apply_image(policy: MigrationPolicy,
                 image: Mapping[str, tuple[object, str]], size_gib: float,
                 out: _Collector) -> MigrationPolicy:
    """Image keys: only what costs the migration no way of completing."""
    origin = 'image property'
    for name, (value, text) in sorted(image.items()):
        if name == 'max_downtime_ms':
            assert isinstance(value, int)
            policy = _image_downtime(policy, value, text, out)
        elif name == 'ladder':
            out.ignore(origin, name, text,
                       "the ladder is the operator's: a rung removed could "
                       'leave the guest no way to complete its migration '
                       '(a flavor extra spec can set it)')
        elif name == 'permit_post_copy':
            if value and not policy.permit_post_copy:
                out.ignore(origin, name, text,
                           'post-copy is not permitted here; an image may '
                           'only turn it off')
            elif not value and 'postcopy' in policy.ladder:
                out.ignore(origin, name, text,
                           'post-copy is a rung of the ladder and may be '
                           'the only way this guest completes its migration '
                           '(a flavor extra spec can turn it off)')
            elif not value:
                policy = policy.replace(permit_post_copy=False)
        elif name == 'completion_timeout_s_per_gib':
            assert isinstance(value, int)
            policy = _image_deadline(policy, value, size_gib, text, out)
    return policy


def resolve(host: MigrationPolicy, flavor_specs: Mapping[str, str],
            system_metadata: Mapping[str, str],
            size_gib: float) -> Resolved:
    """The host policy with one instance's flavor and image keys applied.

    ``size_gib`` is what the migration moves (memory, plus disks for a
    block migration): an image's deadline is per GiB. Never raises for a
    key's value: bad keys are ignored and listed.
    """
    if host.mode == 'upstream':
        return Resolved(host)
    out = _Collector()
    flavor = _parse_all(flavor_specs, 'flavor extra spec', out)
    policy = _apply_flavor(host, flavor, out)
    # A lowered ceiling drags the starting limit down with it.
    policy = policy.replace(initial_downtime_ms=min(
        policy.initial_downtime_ms, policy.max_downtime_ms))
    image_keys = image_properties(system_metadata)
    if host.ignore_image_properties:
        for name, text in sorted(_ours(image_keys).items()):
            out.ignore('image property', name, text,
                       '[livemig_ext] ignore_image_properties is set')
    else:
        image = _parse_all(image_keys, 'image property', out)
        policy = _apply_image(policy, image, size_gib, out)
    return Resolved(policy, tuple(out.ignored), tuple(out.notes))


def instance_policy(host: MigrationPolicy, flavor_specs: Mapping[str, str],
                    system_metadata: Mapping[str, str],
                    size_gib: float = 1.0) -> MigrationPolicy:
    """:func:`resolve`'s policy alone."""
    return resolve(host, flavor_specs, system_metadata, size_gib).policy

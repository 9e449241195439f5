"""Per-instance policy: flavor extra specs and image properties.

Keys are namespaced ``livemig_ext:<name>``. A flavor (set by the operator)
may set any valid value. An image property (set by whoever uploads the image)
may only make a migration more conservative: a lower downtime ceiling, fewer
rungs, no post-copy, a shorter deadline. Every value is checked before the
migration starts; a bad one refuses the migration with the key's name and the
instance stays where it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from nova_livemig_ext.policy import InvalidPolicy
from nova_livemig_ext.policy import MigrationPolicy
from nova_livemig_ext.policy import RUNGS
from nova_livemig_ext.policy import Refusal

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
                'pause, abort). From an image it must keep a subset of the '
                'host ladder, in order. Rungs armed at start (auto_converge, '
                'postcopy) must also be in the host ladder or permitted.'),
    InstanceKey('permit_post_copy',
                'true or false. Can only turn post-copy off unless the host '
                'permits it.'),
    InstanceKey('completion_timeout_s_per_gib',
                'Deadline in seconds per GiB, 1 to 86400. From an image it '
                'can only shorten the host value.'),
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


def _parse_all(source: Mapping[str, str], origin: str,
               refusals: list[Refusal]) -> dict[str, object]:
    values: dict[str, object] = {}
    for name, text in sorted(_ours(source).items()):
        key = '%s %s%s' % (origin, PREFIX, name)
        parser = PARSERS.get(name)
        if parser is None:
            refusals.append(Refusal(
                (key,), 'unknown key', 'Known keys: %s.' % ', '.join(
                    PREFIX + n for n in KEY_NAMES)))
            continue
        try:
            values[name] = parser(str(text))
        except ValueError as e:
            refusals.append(Refusal((key,), '%r %s' % (text, e),
                                    'Fix or remove the key.'))
    return values


def _restrict(policy: MigrationPolicy, image: Mapping[str, object],
              refusals: list[Refusal]) -> MigrationPolicy:
    """Apply image values, which may only tighten the policy."""
    changes: dict[str, object] = {}
    key = 'image property %s%s'
    if 'max_downtime_ms' in image:
        ceiling = image['max_downtime_ms']
        assert isinstance(ceiling, int)
        if ceiling > policy.max_downtime_ms:
            refusals.append(Refusal(
                (key % (PREFIX, 'max_downtime_ms'),),
                '%d ms is above the %d ms this host allows'
                % (ceiling, policy.max_downtime_ms),
                'An image may only lower the downtime ceiling.'))
        else:
            changes['max_downtime_ms'] = ceiling
    if 'ladder' in image:
        ladder = image['ladder']
        assert isinstance(ladder, tuple)
        kept = [r for r in policy.ladder if r in ladder]
        if list(ladder) != kept:
            refusals.append(Refusal(
                (key % (PREFIX, 'ladder'),),
                '%s is not a subset of %s in the same order'
                % (','.join(ladder), ','.join(policy.ladder)),
                'An image may only remove rungs.'))
        else:
            changes['ladder'] = ladder
    if image.get('permit_post_copy') is True and not policy.permit_post_copy:
        refusals.append(Refusal(
            (key % (PREFIX, 'permit_post_copy'),),
            'post-copy is not permitted on this host',
            'An image may only turn post-copy off.'))
    elif image.get('permit_post_copy') is False:
        changes['permit_post_copy'] = False
    if 'completion_timeout_s_per_gib' in image:
        per_gib = image['completion_timeout_s_per_gib']
        assert isinstance(per_gib, int)
        if per_gib > policy.completion_timeout_s_per_gib:
            refusals.append(Refusal(
                (key % (PREFIX, 'completion_timeout_s_per_gib'),),
                '%d s/GiB is longer than the %d s/GiB of this host'
                % (per_gib, policy.completion_timeout_s_per_gib),
                'An image may only shorten the deadline.'))
        else:
            changes['completion_timeout_s_per_gib'] = per_gib
    return policy.replace(**changes)


def _consistency(policy: MigrationPolicy, host: MigrationPolicy,
                 origin: str) -> list[Refusal]:
    """Instance values that cannot work with what the host armed."""
    refusals = []
    if 'postcopy' in policy.ladder and not policy.permit_post_copy:
        refusals.append(Refusal(
            ('%s %sladder' % (origin, PREFIX),),
            "'postcopy' needs post-copy, which is not permitted for this "
            'instance', "Remove 'postcopy' or permit post-copy."))
    if policy.permit_post_copy and not host.permit_post_copy:
        refusals.append(Refusal(
            ('%s %spermit_post_copy' % (origin, PREFIX),),
            'post-copy is not permitted on this host (it may lack '
            'userfaultfd or its transport cannot run post-copy)',
            'Set [livemig_ext] permit_post_copy on the hosts, or remove '
            'the key.'))
    if 'auto_converge' in policy.ladder and 'auto_converge' not in host.ladder:
        refusals.append(Refusal(
            ('%s %sladder' % (origin, PREFIX),),
            "'auto_converge' is not in this host's ladder, so its settings "
            'were never checked here',
            "Add auto_converge to [livemig_ext] ladder, or remove it."))
    return refusals


def instance_policy(host: MigrationPolicy, flavor_specs: Mapping[str, str],
                    system_metadata: Mapping[str, str]) -> MigrationPolicy:
    """The host policy with one instance's flavor and image keys applied.

    Raises :class:`InvalidPolicy` naming every bad key.
    """
    if host.mode == 'upstream':
        return host
    refusals: list[Refusal] = []
    flavor = _parse_all(flavor_specs, 'flavor extra spec', refusals)
    image = _parse_all(image_properties(system_metadata), 'image property',
                       refusals)
    policy = host.replace(**flavor)
    refusals += _consistency(policy, host, 'flavor extra spec')
    policy = _restrict(policy, image, refusals)
    # A lowered ceiling drags the starting limit down with it.
    policy = policy.replace(initial_downtime_ms=min(
        policy.initial_downtime_ms, policy.max_downtime_ms))
    if not refusals:
        refusals += _consistency(policy, host, 'image property')
    if refusals:
        raise InvalidPolicy(refusals)
    return policy

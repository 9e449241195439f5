"""Validators for ``livemig_ext:*`` flavor extra specs in Nova's API.

Registered through the ``nova.api.extra_spec_validators`` entry point, so
``openstack flavor set --property livemig_ext:max_downtime_ms=soon`` is
refused with HTTP 400 (API microversion 2.86 and later) instead of being
stored. The rules are :mod:`nova_livemig_ext.instance_policy`'s own parsers:
the API and nova-compute cannot disagree about a value.

Imported by nova-api only; it needs Nova but nothing of the driver.
"""

from nova.api.validation.extra_specs import base
from nova import exception

from nova_livemig_ext import instance_policy

_TYPES = {
    'max_downtime_ms': int,
    'completion_timeout_s_per_gib': int,
    'permit_post_copy': bool,
    'ladder': str,
}


class LivemigExtValidator(base.ExtraSpecValidator):
    """Nova's validator, whose value check is our parser."""

    def validate(self, name, value):
        # Ours first: Nova's own check repeats a bad value as it is, and
        # ours shows it escaped and cut short (it goes back in the API's
        # answer and into logs).
        try:
            instance_policy.parse_value(name[len(instance_policy.PREFIX):],
                                        value)
        except ValueError as e:
            raise exception.ValidationError(
                'Validation failed; %s is not valid for %s: %s'
                % (instance_policy.shown(value),
                   instance_policy.key_name(
                       name[len(instance_policy.PREFIX):]), e))
        super().validate(name, value)


def _validator(key):
    return LivemigExtValidator(
        name=instance_policy.PREFIX + key.name,
        description=key.help,
        value={'type': _TYPES[key.name], 'description': key.help})


EXTRA_SPEC_VALIDATORS = [_validator(key) for key in instance_policy.KEYS]


def register():
    """What Nova's validator registry loads from this entry point."""
    return EXTRA_SPEC_VALIDATORS

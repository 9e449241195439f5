"""The libvirt driver with nova-livemig-ext's live-migration path.

A thin subclass of Nova's ``LibvirtDriver``: it changes how flags and
parameters are chosen and which monitor watches a running migration, and
leaves every other behaviour of Nova alone.

Load it with ``compute_driver = livemig_ext.LibvirtLiveMigExtDriver`` in
``[DEFAULT]``.
"""

from oslo_log import log as logging

import nova.conf
from nova import exception
from nova.virt.libvirt import driver as libvirt_driver

from nova_livemig_ext import conf as livemig_conf
from nova_livemig_ext import flags as livemig_flags
from nova_livemig_ext import hostfacts
from nova_livemig_ext import instance_policy
from nova_livemig_ext import policy as livemig_policy

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF

livemig_conf.register_opts(CONF)


def _libvirt():
    # Nova's test fixture swaps the libvirt module inside Nova's driver
    # module; reading it from there keeps us on the same (real or fake) one.
    return libvirt_driver.libvirt


class LibvirtLiveMigExtDriver(libvirt_driver.LibvirtDriver):
    """Nova's libvirt driver whose live migrations finish in time."""

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        self.livemig_policy = None
        self.livemig_host_facts = None

    def init_host(self, host):
        # Options first: a refused configuration must stop nova-compute
        # before it touches libvirt or any guest.
        try:
            policy = livemig_policy.policy_from_conf(CONF)
        except livemig_policy.InvalidPolicy as e:
            LOG.error('%s', e)
            raise exception.InvalidConfiguration(str(e))
        super().init_host(host)
        facts = hostfacts.probe(self._host.get_connection(), _libvirt())
        try:
            livemig_flags.check_policy(policy, facts)
        except livemig_policy.InvalidPolicy as e:
            LOG.error('%s', e)
            raise exception.InvalidConfiguration(str(e))
        self.livemig_policy = policy
        self.livemig_host_facts = facts
        self._parse_migration_flags()
        plan = self._livemig_plan(livemig_flags.InstanceFacts())
        LOG.info('nova-livemig-ext: mode %(mode)s, flags %(flags)s, '
                 'ladder %(ladder)s, downtime %(init)d..%(max)d ms, '
                 'bandwidth %(bw)s MiB/s',
                 {'mode': policy.mode, 'flags': '|'.join(plan.flag_names),
                  'ladder': ','.join(plan.ladder) or '-',
                  'init': policy.initial_downtime_ms,
                  'max': policy.max_downtime_ms,
                  'bw': policy.bandwidth_mib_s or 'unlimited'})

    def _livemig_plan(self, instance_facts):
        return livemig_flags.plan_migration(
            self.livemig_policy, self.livemig_host_facts, instance_facts)

    def _parse_migration_flags(self):
        """Nova's flag attributes, from our policy once it is known.

        Nova reads ``_live_migration_flags`` and ``_block_migration_flags``
        in its pre-checks and in ``_live_migration_operation``; keeping them
        equal to our plan keeps those checks truthful.
        """
        if self.livemig_policy is None:
            # Called from LibvirtDriver.init_host before our policy exists.
            return super()._parse_migration_flags()
        self._live_migration_flags = self._livemig_plan(
            livemig_flags.InstanceFacts()).flags
        self._block_migration_flags = self._livemig_plan(
            livemig_flags.InstanceFacts(block_migration=True)).flags

    def livemig_instance_policy(self, instance):
        """The host policy with this instance's flavor and image keys."""
        return instance_policy.instance_policy(
            self.livemig_policy, instance.flavor.extra_specs or {},
            instance.system_metadata or {})

    def check_can_live_migrate_source(self, context, instance,
                                      dest_check_data,
                                      block_device_info=None):
        # Refuse before any job starts: the instance stays ACTIVE where it
        # is and the migration record says which key is wrong.
        try:
            self.livemig_instance_policy(instance)
        except livemig_policy.InvalidPolicy as e:
            LOG.warning('Live migration refused: %s', e, instance=instance)
            raise exception.MigrationPreCheckError(reason=str(e))
        return super().check_can_live_migrate_source(
            context, instance, dest_check_data, block_device_info)

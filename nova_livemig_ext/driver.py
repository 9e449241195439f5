"""The libvirt driver with nova-livemig-ext's live-migration path.

A thin subclass of Nova's ``LibvirtDriver``: it changes how flags and
parameters are chosen and which monitor watches a running migration, and
leaves every other behaviour of Nova alone.

Load it with ``compute_driver = livemig_ext.LibvirtLiveMigExtDriver`` in
``[DEFAULT]``.
"""

import logging as std_logging
import time

from oslo_log import log as logging

from nova.compute import vm_states
import nova.conf
from nova import exception
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import guest as libvirt_guest
from nova.virt.libvirt import migration as libvirt_migrate

from nova_livemig_ext import conf as livemig_conf
from nova_livemig_ext import flags as livemig_flags
from nova_livemig_ext import hostfacts
from nova_livemig_ext import instance_policy
from nova_livemig_ext import job as livemig_job
from nova_livemig_ext import monitor as livemig_monitor
from nova_livemig_ext import policy as livemig_policy

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF

livemig_conf.register_opts(CONF)


# Nova decides per call whether disks are copied (it drops NON_SHARED_INC
# when there is nothing to copy); every other flag comes from our plan.
NOVA_OWNED_FLAGS = livemig_flags.FLAG_VALUES['VIR_MIGRATE_NON_SHARED_INC']


class PlannedDomain(object):
    """A libvirt domain whose ``migrateToURI3`` gets our flags and params.

    Nova builds the destination XML, disk list and URIs; those parameters
    are kept. Bandwidth, post-copy, auto-converge, parallel connections and
    compression come from the plan. Every other call goes to the domain.
    """

    def __init__(self, domain, plan):
        self._domain = domain
        self._plan = plan

    def __getattr__(self, name):
        return getattr(self._domain, name)

    def migrateToURI3(self, dconnuri, params, flags):
        flags = ((flags & NOVA_OWNED_FLAGS)
                 | (self._plan.flags & ~NOVA_OWNED_FLAGS))
        merged = dict(params)
        merged.pop(livemig_flags.PARAM_PARALLEL_CONNECTIONS, None)
        merged.update(self._plan.params)
        return self._domain.migrateToURI3(dconnuri, params=merged,
                                          flags=flags)


def instance_facts(instance, block_migration, has_vpmem):
    """What the flags need to know about one Nova instance."""
    pagesize_kib = None
    numa = instance.numa_topology
    if numa is not None:
        sizes = [c.pagesize for c in numa.cells if c.pagesize]
        pagesize_kib = max(sizes) if sizes else None
    pci = bool(instance.obj_attr_is_set('pci_devices')
               and instance.pci_devices)
    return livemig_flags.InstanceFacts(
        memory_mib=instance.flavor.memory_mb,
        disk_gib=(instance.flavor.root_gb + instance.flavor.ephemeral_gb
                  if block_migration else 0),
        block_migration=bool(block_migration),
        paused=instance.vm_state == vm_states.PAUSED,
        has_vpmem=has_vpmem,
        has_pci_passthrough=pci,
        hugepage_size_kib=pagesize_kib)


class InstanceLog(std_logging.LoggerAdapter):
    """Every line the monitor logs carries the instance, as Nova's do."""

    def process(self, msg, kwargs):
        kwargs.setdefault('instance', self.extra['instance'])
        return msg, kwargs


class NovaMigrationMonitor(livemig_monitor.MigrationMonitor):
    """The shared monitor, plus what Nova's migration record must show."""

    def __init__(self, *args, migration=None, instance=None,
                 force_requests=None, save_interval_s=5.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.migration = migration
        self.instance = instance
        self.force_requests = force_requests
        self.save_interval_s = save_interval_s
        self._last_save_s = None

    def apply(self, decision):
        result = super().apply(decision)
        if (result.applied and decision.action is
                livemig_monitor.ctl.Action.START_POSTCOPY
                and self.migration is not None):
            self.migration.status = 'running (post-copy)'
            self.migration.save()
        return result

    def _observe(self, sample, now_s):
        while self.force_requests:
            request = self.force_requests.popleft()
            if request != 'force-complete':
                continue
            self.log.info('Live migration: force-complete requested')
            for decision in self.controller.force_complete(now_s):
                self.apply(decision)
        super()._observe(sample, now_s)
        if sample.is_active and (
                self._last_save_s is None
                or now_s - self._last_save_s >= self.save_interval_s):
            self._last_save_s = now_s
            self.save_progress(sample)

    def save_progress(self, sample):
        """What ``openstack server migration show`` displays."""
        if self.migration is None:
            return
        # Nova's API shows these as null or at least 1 byte: 0 is "none".
        figures = {
            'memory_total': sample.memory_total_bytes,
            'memory_processed': sample.memory_processed_bytes,
            'memory_remaining': sample.memory_remaining_bytes,
            'disk_total': sample.disk_total_bytes,
            'disk_processed': max(0, sample.disk_total_bytes
                                  - sample.disk_remaining_bytes),
            'disk_remaining': sample.disk_remaining_bytes,
        }
        info = libvirt_guest.JobInfo(
            type=_libvirt().VIR_DOMAIN_JOB_UNBOUNDED,
            **{k: v or None for k, v in figures.items()})
        remaining = 100
        if sample.memory_total_bytes:
            remaining = round(sample.memory_remaining_bytes * 100
                              / sample.memory_total_bytes)
        try:
            libvirt_migrate.save_stats(self.instance, self.migration, info,
                                       remaining)
        except Exception as e:
            # Progress is for display: never let it end the watch.
            self.log.warning('Live migration: saving progress failed: %s', e)


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
        # instance uuid -> (policy, plan, facts) of the migration under way
        self.livemig_jobs = {}
        # instance uuid -> the error the migrate call raised, if any
        self.livemig_errors = {}

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

    def _live_migration(self, context, instance, dest, post_method,
                        recover_method, block_migration, migrate_data):
        policy = self.livemig_instance_policy(instance)
        facts = instance_facts(instance, migrate_data.block_migration,
                               bool(self._get_vpmems(instance)))
        plan = livemig_flags.plan_migration(policy, self.livemig_host_facts,
                                            facts)
        for note in plan.notes:
            LOG.info('nova-livemig-ext: %s', note, instance=instance)
        LOG.info('nova-livemig-ext: starting live migration to %(dest)s, '
                 'flags %(flags)s, ladder %(ladder)s',
                 {'dest': dest, 'flags': '|'.join(plan.flag_names),
                  'ladder': ','.join(plan.ladder) or '-'},
                 instance=instance)
        self.livemig_jobs[instance.uuid] = (policy, plan, facts)
        try:
            return super()._live_migration(
                context, instance, dest, post_method, recover_method,
                block_migration, migrate_data)
        finally:
            self.livemig_jobs.pop(instance.uuid, None)
            self.livemig_errors.pop(instance.uuid, None)

    def _live_migration_operation(self, context, instance, dest,
                                  block_migration, migrate_data, guest,
                                  device_names):
        job = self.livemig_jobs.get(instance.uuid)
        if job is None:
            return super()._live_migration_operation(
                context, instance, dest, block_migration, migrate_data,
                guest, device_names)
        guest = libvirt_guest.Guest(PlannedDomain(guest._domain, job[1]))
        try:
            super()._live_migration_operation(
                context, instance, dest, block_migration, migrate_data,
                guest, device_names)
        except Exception as e:
            # Our monitor reads how the job ended from libvirt and tells
            # Nova (rollback) itself. Re-raising here would make Nova put an
            # instance whose guest still runs on the source into ERROR.
            self.livemig_errors[instance.uuid] = e

    def _live_migration_monitor(self, context, instance, guest, dest,
                                post_method, recover_method,
                                block_migration, migrate_data, future,
                                disk_paths):
        job = self.livemig_jobs.get(instance.uuid)
        if job is None:
            return super()._live_migration_monitor(
                context, instance, guest, dest, post_method, recover_method,
                block_migration, migrate_data, future, disk_paths)
        policy, plan, facts = job
        controller = livemig_job.decision_maker(
            policy, plan, memory_mib=facts.memory_mib,
            disk_gib=facts.disk_gib,
            nova_data_gib=self._live_migration_data_gb(instance, disk_paths))
        log = InstanceLog(LOG, {'instance': instance})
        monitor = NovaMigrationMonitor(
            guest._domain, controller, time.monotonic, time.sleep,
            poll_interval_s=policy.poll_interval_s, log=log,
            errors=livemig_monitor.ErrorClassifier((_libvirt().libvirtError,)),
            migration=migrate_data.migration, instance=instance,
            force_requests=self.active_migrations.get(instance.uuid),
            save_interval_s=CONF.libvirt.live_migration_monitor_interval)
        try:
            report = monitor.watch(future.done)
            outcome = self._livemig_outcome(guest, instance, future, report)
            error = self.livemig_errors.get(instance.uuid)
            if error is not None and outcome is not (
                    livemig_monitor.Outcome.COMPLETED):
                if monitor.errors.aborted(error):
                    outcome = livemig_monitor.Outcome.CANCELLED
                LOG.warning('Live migration failed: %s', error,
                            instance=instance)
            report = monitor.finish(
                report, outcome,
                error=None if error is None else str(error))
            self.livemig_log_summary(instance, report)
            if outcome is livemig_monitor.Outcome.COMPLETED:
                post_method(context, instance, dest, block_migration,
                            migrate_data)
            elif outcome is livemig_monitor.Outcome.CANCELLED:
                recover_method(context, instance, dest, migrate_data,
                               migration_status='cancelled')
            else:
                recover_method(context, instance, dest, migrate_data)
        finally:
            self._clear_empty_migration(instance)

    def _livemig_outcome(self, guest, instance, future, report):
        """How the job ended, as libvirt tells it (Nova's own rules)."""
        if report.outcome is not livemig_monitor.Outcome.UNKNOWN:
            return report.outcome
        lv = _libvirt()
        info = guest.get_job_info()
        job_type = info.type
        if job_type in (lv.VIR_DOMAIN_JOB_NONE, lv.VIR_DOMAIN_JOB_UNBOUNDED):
            # The source domain left (switchover) or the migrate call
            # returned: wait for Nova's thread, then ask where the guest is.
            while not future.done():
                time.sleep(0.1)
            job_type = libvirt_migrate.find_job_type(guest, instance)
        return {
            lv.VIR_DOMAIN_JOB_COMPLETED: livemig_monitor.Outcome.COMPLETED,
            lv.VIR_DOMAIN_JOB_CANCELLED: livemig_monitor.Outcome.CANCELLED,
        }.get(job_type, livemig_monitor.Outcome.FAILED)

    @staticmethod
    def livemig_log_summary(instance, report):
        rungs = ', '.join('%s (%s)' % (rung, reason)
                          for rung, reason in report.rungs_used) or 'none'
        LOG.info('nova-livemig-ext: live migration %(outcome)s in '
                 '%(total).1f s, downtime %(downtime)s ms (predicted '
                 '%(predicted)s ms), %(iterations)s iterations, %(sent)s '
                 'bytes sent, rungs used: %(rungs)s',
                 {'outcome': report.outcome.value, 'total': report.total_s,
                  'downtime': report.downtime_ms,
                  'predicted': (None if report.predicted_downtime_ms is None
                                else round(report.predicted_downtime_ms)),
                  'iterations': report.iterations,
                  'sent': report.memory_sent_bytes, 'rungs': rungs},
                 instance=instance)

"""The libvirt driver with nova-livemig-ext's live-migration path.

A thin subclass of Nova's ``LibvirtDriver``: it changes how flags and
parameters are chosen and which monitor watches a running migration, and
leaves every other behaviour of Nova alone.

Load it with ``compute_driver = livemig_ext.LibvirtLiveMigExtDriver`` in
``[DEFAULT]``.
"""

import logging as std_logging
import os
import time

from oslo_log import log as logging

from nova.compute import task_states
from nova.compute import utils as compute_utils
from nova.compute import vm_states
import nova.conf
from nova.network import model as network_model
from nova import context as nova_context
from nova import exception
from nova.i18n import _
from nova import objects
from nova.objects import base as objects_base
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import guest as libvirt_guest
from nova.virt.libvirt import migration as libvirt_migrate

from nova_livemig_ext import conf as livemig_conf
from nova_livemig_ext import devices as livemig_devices
from nova_livemig_ext import flags as livemig_flags
from nova_livemig_ext import hostfacts
from nova_livemig_ext import instance_policy
from nova_livemig_ext import job as livemig_job
from nova_livemig_ext import monitor as livemig_monitor
from nova_livemig_ext import novacompat
from nova_livemig_ext import policy as livemig_policy
from nova_livemig_ext import postcopy as livemig_postcopy
from nova_livemig_ext import records as livemig_records

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF

livemig_conf.register_opts(CONF)


# How long nova-compute's start waits for an interrupted post-copy migration
# before it leaves it to an operator (capped by postcopy_recovery_timeout_s).
RESTART_RECOVERY_S = 120.0
# How long to wait for an unwatched pre-copy job to end after abortJob.
ABORT_WAIT_S = 60.0
# After the job's statistics said it ended, how long to wait for the migrate
# call to return with its error.
CALL_RETURN_WAIT_S = 60.0
# libvirt's VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, and how long to wait for it
# once the migrate call has returned.
VIR_DOMAIN_EVENT_ID_JOB_COMPLETED = 21
COMPLETED_EVENT_WAIT_S = 2.0
# Nova's part of ending an interrupted migration needs the resource tracker,
# which nova-compute sets up only after init_host: wait for it this long.
NOVA_READY_WAIT_S = 600.0

# Nova decides per call whether disks are copied (it drops NON_SHARED_INC
# when there is nothing to copy); every other flag comes from our plan.
NOVA_OWNED_FLAGS = livemig_flags.FLAG_VALUES['VIR_MIGRATE_NON_SHARED_INC']


class PostcopyRecoveryNeeded(exception.NovaException):
    """Post-copy could not be completed: both halves kept for an operator.

    Raised out of the driver's live migration so that Nova's compute manager
    sets the migration to ``error`` and the instance to ERROR without a
    rollback; the message becomes the instance fault.
    """

    msg_fmt = _("Post-copy live migration needs recovery, run on "
                "%(source_host)s: %(command)s. %(detail)s")


class PlannedDomain(object):
    """A libvirt domain whose ``migrateToURI3`` gets our flags and params.

    Nova builds the destination XML, disk list and URIs; those parameters
    are kept. Bandwidth, post-copy, auto-converge, parallel connections and
    compression come from the plan. Every other call goes to the domain.
    The call as made is kept: a broken post-copy is resumed by repeating it.
    """

    def __init__(self, domain, plan, on_call=None):
        self._domain = domain
        self._plan = plan
        self._on_call = on_call
        self.call = None

    def __getattr__(self, name):
        return getattr(self._domain, name)

    def migrateToURI3(self, dconnuri, params, flags):
        flags = ((flags & NOVA_OWNED_FLAGS)
                 | (self._plan.flags & ~NOVA_OWNED_FLAGS))
        merged = dict(params)
        merged.pop(livemig_flags.PARAM_PARALLEL_CONNECTIONS, None)
        merged.update(self._plan.params)
        self.call = (dconnuri, merged, flags)
        if self._on_call is not None:
            self._on_call(self.call)
        return self._domain.migrateToURI3(dconnuri, params=merged,
                                          flags=flags)

    def resume_postcopy(self):
        """Repeat the migration call with VIR_MIGRATE_POSTCOPY_RESUME."""
        if self.call is None:
            # A libvirtError built here would carry the thread's last libvirt
            # error instead of this text: clear it first.
            lv = _libvirt()
            if hasattr(lv, 'virResetLastError'):
                lv.virResetLastError()
            raise lv.libvirtError(
                'no migration call was made: nothing to resume')
        dconnuri, params, flags = self.call
        return self._domain.migrateToURI3(
            dconnuri, params=dict(params),
            flags=flags | livemig_postcopy.VIR_MIGRATE_POSTCOPY_RESUME)


def _migrate_data_devices(migrate_data):
    """(SR-IOV ports, mediated devices, PCI devices) Nova moves with the
    guest, as the conductor and the destination described them."""
    def field(name):
        if migrate_data is None or name not in migrate_data:
            return None
        return getattr(migrate_data, name)

    direct = network_model.VNIC_TYPES_DIRECT_PASSTHROUGH
    ports = any(
        'source_vif' in vif and vif.source_vif
        and vif.source_vif.get('vnic_type') in direct
        for vif in field('vifs') or [])
    mdevs = bool(field('target_mdevs') or field('source_mdev_types'))
    pci = bool(field('pci_dev_map_src_dst'))
    return ports, mdevs, pci


def instance_facts(instance, block_migration, has_vpmem, guest_xml=None,
                   migrate_data=None):
    """What the flags need to know about one Nova instance.

    Devices come from the running guest's XML (``guest_xml``; None when it
    could not be read, which keeps post-copy off), from what ``migrate_data``
    says Nova moves, and from the instance's vPMEM and ``pci_devices`` when
    loaded.
    """
    pagesize_kib = None
    numa = instance.numa_topology
    if numa is not None:
        sizes = [c.pagesize for c in numa.cells if c.pagesize]
        pagesize_kib = max(sizes) if sizes else None
    pci = bool(instance.obj_attr_is_set('pci_devices')
               and instance.pci_devices)
    unknown = guest_xml is None
    guest = livemig_devices.GuestDevices()
    if guest_xml is not None:
        try:
            guest = livemig_devices.from_domain_xml(guest_xml)
        except ValueError as e:
            LOG.warning('nova-livemig-ext: %s', e, instance=instance)
            unknown = True
    ports, mdevs, pci_moved = _migrate_data_devices(migrate_data)
    return livemig_flags.InstanceFacts(
        memory_mib=instance.flavor.memory_mb,
        disk_gib=(instance.flavor.root_gb + instance.flavor.ephemeral_gb
                  if block_migration else 0),
        block_migration=bool(block_migration),
        paused=instance.vm_state == vm_states.PAUSED,
        has_vpmem=has_vpmem or guest.nvdimms > 0,
        has_pci_passthrough=pci or pci_moved or guest.pci_hostdevs > 0,
        hugepage_size_kib=pagesize_kib,
        has_sriov_port=ports or guest.sriov_interfaces > 0,
        has_mdev=mdevs or guest.mdevs > 0,
        devices_unknown=unknown)


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
            try:
                self.migration.save()
            except Exception as e:
                # The record is for display: the switch happened whatever
                # the database says, and the watch must go on.
                self.log.warning('Live migration: saving the post-copy '
                                 'status failed: %s', e)
        return result

    def _each_poll(self, now_s):
        # Force-complete is honoured even while jobStats does not answer.
        while self.force_requests:
            request = self.force_requests.popleft()
            if request != 'force-complete':
                continue
            self.log.info('Live migration: force-complete requested')
            for decision in self.controller.force_complete(now_s):
                self.apply(decision)

    def _observe(self, sample, now_s):
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


class CompletedJobListener:
    """libvirt's completed-job statistics of one migration, on the source.

    Nova migrates with ``VIR_MIGRATE_UNDEFINE_SOURCE``: when the migrate call
    returns the source domain is gone, and with it the statistics that carry
    libvirt's downtime. libvirt hands them to the JOB_COMPLETED event
    instead, which Nova's event loop delivers on its own thread. Without
    them the summary line cannot give the guest's longest unavailability of
    a pre-copy migration.
    """

    def __init__(self, connect, domain, instance):
        """``connect`` returns the host's libvirt connection; whatever it
        or the registration raises leaves the migration watched as before,
        only without the event."""
        self.stats = None
        self._conn = None
        self._id = None
        try:
            self._conn = connect()
            self._id = self._conn.domainEventRegisterAny(
                domain, VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._on_event,
                None)
        except Exception as e:
            LOG.info('nova-livemig-ext: cannot listen for the job-completed '
                     'event (%s); libvirt\'s downtime may be unknown', e,
                     instance=instance)

    def _on_event(self, conn, dom, params, opaque):
        self.stats = dict(params)

    def wait(self, timeout_s):
        """The statistics, waiting up to ``timeout_s`` for the event."""
        if self._id is None:
            return None
        deadline_s = time.monotonic() + timeout_s
        while self.stats is None and time.monotonic() < deadline_s:
            time.sleep(0.1)
        return self.stats

    def close(self):
        if self._id is None:
            return
        try:
            self._conn.domainEventDeregisterAny(self._id)
        except Exception:
            LOG.debug('nova-livemig-ext: job-completed event already gone')
        self._id = None


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
        # instance uuid -> the PlannedDomain that made the migrate call
        self.livemig_calls = {}
        self.livemig_records = None
        self.livemig_host = None
        # instance uuids whose migration an operator asked to abort
        self.livemig_operator_aborts = set()

    def init_host(self, host):
        # A Nova outside the supported range first: the methods overridden
        # here are private to Nova and change between releases.
        problem = novacompat.check_supported(
            novacompat.installed_nova_version())
        if problem:
            LOG.error('%s', problem)
            raise exception.InvalidConfiguration(problem)
        # Options next: a refused configuration must stop nova-compute
        # before it touches libvirt or any guest.
        for problem in livemig_conf.unknown_options(CONF):
            LOG.warning('nova-livemig-ext: %s', problem)
        problems = (livemig_conf.invalid_values(CONF)
                    + livemig_conf.invalid_values(
                        CONF, ('libvirt',), prefix='live_migration'))
        if problems:
            message = ('nova-livemig-ext refuses this configuration: %s'
                       % '; '.join(problems))
            LOG.error('%s', message)
            raise exception.InvalidConfiguration(message)
        try:
            policy = livemig_policy.policy_from_conf(CONF)
        except livemig_policy.InvalidPolicy as e:
            LOG.error('%s', e.one_line())
            raise exception.InvalidConfiguration(e.one_line())
        super().init_host(host)
        facts = hostfacts.probe(self._host.get_connection(), _libvirt())
        try:
            livemig_flags.check_policy(policy, facts)
        except livemig_policy.InvalidPolicy as e:
            LOG.error('%s', e.one_line())
            raise exception.InvalidConfiguration(e.one_line())
        self.livemig_policy = policy
        self.livemig_host_facts = facts
        self.livemig_host = host
        self.livemig_records = livemig_records.RecordStore(
            os.path.join(CONF.state_path, livemig_records.DIR_NAME))
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
        self._livemig_finish_interrupted()

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

    def livemig_resolve(self, instance, block_migration=False):
        """The host policy with this instance's flavor and image keys, and
        the keys that were ignored (never a refusal)."""
        flavor = instance.flavor
        size_gib = livemig_job.data_gib(
            flavor.memory_mb,
            flavor.root_gb + flavor.ephemeral_gb if block_migration else 0)
        return instance_policy.resolve(
            self.livemig_policy, flavor.extra_specs or {},
            instance.system_metadata or {}, size_gib)

    def livemig_instance_policy(self, instance, block_migration=False):
        """The host policy with this instance's flavor and image keys."""
        return self.livemig_resolve(instance, block_migration).policy

    def check_can_live_migrate_source(self, context, instance,
                                      dest_check_data,
                                      block_device_info=None):
        # Instance keys never refuse a migration (a tenant's image must not
        # stop host maintenance): a key that cannot be used is named here.
        block = bool(dest_check_data is not None
                     and 'block_migration' in dest_check_data
                     and dest_check_data.block_migration)
        resolved = self.livemig_resolve(instance, block)
        for ignored in resolved.ignored:
            LOG.warning('nova-livemig-ext: %s', ignored, instance=instance)
        return super().check_can_live_migrate_source(
            context, instance, dest_check_data, block_device_info)

    def check_can_live_migrate_destination(self, context, instance,
                                           src_compute_info,
                                           dst_compute_info,
                                           block_migration=False,
                                           disk_over_commit=False):
        # Before Nova's checks, which leave a file to clean up behind them.
        self._livemig_check_destination(instance, block_migration)
        return super().check_can_live_migrate_destination(
            context, instance, src_compute_info, dst_compute_info,
            block_migration, disk_over_commit)

    def _livemig_check_destination(self, instance, block_migration):
        """Can this host, as it is now, receive what the policy sends?

        The features were checked at start; userfaultfd and the running
        libvirt and QEMU can change under a running nova-compute (a sysctl,
        a package upgrade). A refusal here makes the conductor try another
        host before any job starts.
        """
        if self.livemig_policy is None or self.livemig_host_facts is None:
            return
        try:
            facts = hostfacts.probe(self._host.get_connection(), _libvirt())
        except Exception as e:
            LOG.warning('nova-livemig-ext: could not read this host\'s '
                        'facts, keeping those of the start: %s', e,
                        instance=instance)
            return
        for change in hostfacts.changes(self.livemig_host_facts, facts):
            LOG.warning('nova-livemig-ext: %s since nova-compute started',
                        change, instance=instance)
        try:
            policy = self.livemig_instance_policy(
                instance, bool(block_migration))
        except Exception as e:
            LOG.warning('nova-livemig-ext: the instance\'s keys could not be '
                        'read, checking with this host\'s policy: %s', e,
                        instance=instance)
            policy = self.livemig_policy
        refusals = livemig_flags.host_refusals(policy, facts)
        if refusals:
            reason = ('destination %s cannot receive this migration: %s'
                      % (self.livemig_host,
                         '; '.join(str(r) for r in refusals)))
            LOG.warning('nova-livemig-ext: %s', reason, instance=instance)
            raise exception.MigrationPreCheckError(reason=reason)

    def _live_migration(self, context, instance, dest, post_method,
                        recover_method, block_migration, migrate_data):
        resolved = self.livemig_resolve(
            instance, bool(migrate_data.block_migration))
        policy = resolved.policy
        for note in resolved.notes:
            LOG.info('nova-livemig-ext: %s', note, instance=instance)
        try:
            guest_xml = self._host.get_guest(instance).get_xml_desc()
        except Exception as e:
            LOG.warning('nova-livemig-ext: the guest\'s XML could not be '
                        'read, post-copy stays off: %s', e, instance=instance)
            guest_xml = None
        facts = instance_facts(instance, migrate_data.block_migration,
                               bool(self._get_vpmems(instance)),
                               guest_xml=guest_xml, migrate_data=migrate_data)
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
        self._livemig_remember(instance.uuid, dest=dest,
                               block_migration=bool(block_migration),
                               migrate_data=migrate_data.obj_to_primitive())
        try:
            return super()._live_migration(
                context, instance, dest, post_method, recover_method,
                block_migration, migrate_data)
        finally:
            self.livemig_jobs.pop(instance.uuid, None)
            self.livemig_errors.pop(instance.uuid, None)
            self.livemig_calls.pop(instance.uuid, None)
            self.livemig_operator_aborts.discard(instance.uuid)

    def _live_migration_operation(self, context, instance, dest,
                                  block_migration, migrate_data, guest,
                                  device_names):
        job = self.livemig_jobs.get(instance.uuid)
        if job is None:
            return super()._live_migration_operation(
                context, instance, dest, block_migration, migrate_data,
                guest, device_names)

        def remember_call(call):
            dconnuri, params, flags = call
            self._livemig_remember(instance.uuid,
                                   call=[dconnuri, dict(params), flags])

        planned = PlannedDomain(guest._domain, job[1], remember_call)
        self.livemig_calls[instance.uuid] = planned
        guest = libvirt_guest.Guest(planned)
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
        # Nova 31 hands over an eventlet event, later releases a future.
        future = novacompat.as_future(future)
        policy, plan, facts = job
        nova_data_gib = self._live_migration_data_gb(instance, disk_paths)
        # Our migrations in flight from this host share its link: a fair
        # share is not a stalled network.
        controller = livemig_job.decision_maker(
            policy, plan, memory_mib=facts.memory_mib,
            disk_gib=facts.disk_gib, nova_data_gib=nova_data_gib,
            link_shares=lambda: max(1, len(self.livemig_jobs)))
        log = InstanceLog(LOG, {'instance': instance})
        monitor = NovaMigrationMonitor(
            guest._domain, controller, time.monotonic, time.sleep,
            poll_interval_s=policy.poll_interval_s, log=log,
            errors=livemig_monitor.ErrorClassifier((_libvirt().libvirtError,)),
            deadline_s=livemig_job.wall_clock_deadline_s(
                policy, livemig_job.data_gib(facts.memory_mib,
                                             facts.disk_gib), nova_data_gib),
            migration=migrate_data.migration, instance=instance,
            force_requests=self.active_migrations.get(instance.uuid),
            save_interval_s=novacompat.libvirt_option(
                CONF.libvirt, 'live_migration_monitor_interval'))
        # Kept when the migration is left for an operator, and when this
        # thread dies without ending it (only a BaseException gets past):
        # the next start of nova-compute finishes it.
        forget = False
        completed = CompletedJobListener(self._host.get_connection,
                                         guest._domain, instance)
        try:
            report = self._livemig_watch(monitor, guest, instance, future)
            # libvirt's statistics can say the job ended before its migrate
            # call has returned: wait for the call, whose error tells an
            # operator's abort from a failure.
            deadline_s = time.monotonic() + CALL_RETURN_WAIT_S
            while not future.done() and time.monotonic() < deadline_s:
                time.sleep(0.1)
            error = self.livemig_errors.get(instance.uuid)
            if report.error is None and error is not None:
                report = livemig_monitor.dataclasses.replace(
                    report, error=str(error))
            outcome = self._livemig_outcome(guest, instance, future, report)
            if ((error is not None
                 or outcome is not livemig_monitor.Outcome.COMPLETED)
                    and monitor.in_postcopy()):
                # The newest memory is on the destination: Nova's rollback
                # would destroy it. Complete or keep both halves.
                report = self._livemig_settle_postcopy(
                    monitor, report, instance, dest, policy)
                outcome = report.outcome
            else:
                if (instance.uuid in self.livemig_operator_aborts
                        and outcome is not livemig_monitor.Outcome.COMPLETED):
                    # libvirt does not always end an aborted job with
                    # "operation aborted" (a broken pipe on the migration
                    # stream, seen through Nova's API): the operator's
                    # request is what says it was cancelled.
                    outcome = livemig_monitor.Outcome.CANCELLED
                elif error is not None and outcome is not (
                        livemig_monitor.Outcome.COMPLETED):
                    if monitor.errors.aborted(error):
                        # Our own abort (deadline, ladder) is a failure of
                        # the migration; Nova's "cancelled" means an
                        # operator's abort.
                        outcome = (livemig_monitor.Outcome.ABORTED
                                   if monitor.abort_requested
                                   else livemig_monitor.Outcome.CANCELLED)
                    LOG.warning('Live migration failed: %s', error,
                                instance=instance)
                stats = None
                if outcome is livemig_monitor.Outcome.COMPLETED:
                    stats = completed.wait(COMPLETED_EVENT_WAIT_S)
                report = monitor.finish(report, outcome, error=report.error,
                                        completed_stats=stats)
            self.livemig_log_summary(instance, report)
            if outcome is livemig_monitor.Outcome.COMPLETED:
                forget = True
                post_method(context, instance, dest, block_migration,
                            migrate_data)
            elif outcome is livemig_monitor.Outcome.NEEDS_RECOVERY:
                needed = self._livemig_recovery_needed(instance, dest,
                                                       report, policy)
                try:
                    # Nova records no fault for an error raised in its live
                    # migration thread: the operator would see only ERROR.
                    compute_utils.add_instance_fault_from_exc(
                        context, instance, needed)
                except Exception as e:
                    LOG.warning('Could not record the instance fault: %s',
                                e, instance=instance)
                # Nova's compute manager then sets the migration to error
                # and the instance to ERROR, without a rollback.
                raise needed
            elif outcome is livemig_monitor.Outcome.CANCELLED:
                forget = True
                recover_method(context, instance, dest, migrate_data,
                               migration_status='cancelled')
            elif outcome is livemig_monitor.Outcome.ABORTED:
                forget = True
                LOG.warning('nova-livemig-ext: live migration to %(dest)s '
                            'aborted by its controller, the guest keeps '
                            'running on this host: %(reason)s',
                            {'dest': dest,
                             'reason': self._livemig_abort_reason(report)},
                            instance=instance)
                recover_method(context, instance, dest, migrate_data,
                               migration_status='failed')
            else:
                forget = True
                recover_method(context, instance, dest, migrate_data)
            forget = True
        except Exception:
            forget = forget or not monitor.in_postcopy()
            raise
        finally:
            completed.close()
            if forget:
                self._livemig_forget(instance.uuid)
            self._clear_empty_migration(instance)

    def _livemig_watch(self, monitor, guest, instance, future):
        """Watch the job; if the monitor itself fails, end the job safely.

        In pre-copy the job is aborted (the source keeps the guest); after
        the switch to post-copy nothing is aborted and the caller settles
        the migration as for any other failure in post-copy.
        """
        try:
            return monitor.watch(future.done)
        except Exception as exc:
            LOG.exception('Live migration monitor failed', instance=instance)
            report = monitor.crash_report(exc)
            if not monitor.in_postcopy():
                try:
                    guest._domain.abortJob()
                except Exception as abort_exc:
                    LOG.warning('Live migration: abort after a monitor '
                                'error failed: %s', abort_exc,
                                instance=instance)
            while not future.done():
                time.sleep(0.1)
            return report

    def _livemig_settle_postcopy(self, monitor, report, instance, dest,
                                 policy):
        planned = self.livemig_calls.get(instance.uuid)
        resume = (planned.resume_postcopy if planned is not None
                  else PlannedDomain(monitor.domain, None).resume_postcopy)
        # nova-compute talks to its own libvirtd only: the destination's
        # view reaches it as the source's post-copy state (libvirt marks the
        # source POSTCOPY_FAILED when its peer connection breaks).
        return livemig_monitor.settle_postcopy(
            monitor, report, resume, None,
            float(policy.postcopy_recovery_timeout_s),
            policy.postcopy_resume)

    def _livemig_recover_command(self, instance, dest, call):
        """The command that resumes this migration by hand on this host.

        ``call`` is the migrate call made (its URI is what the source
        libvirtd dials), or None when it is not known.
        """
        dest_uri = call[0] if call else self._live_migration_uri(dest)
        return livemig_postcopy.RECOVER_COMMAND % {
            'domain': instance.name, 'source': self._host._uri,
            'dest': dest_uri}

    def _livemig_recovery_needed(self, instance, dest, report, policy):
        planned = self.livemig_calls.get(instance.uuid)
        command = self._livemig_recover_command(
            instance, dest, None if planned is None else planned.call)
        recovery = report.recovery
        error = (recovery.last_error if recovery else None) or report.error
        if recovery is not None and recovery.resume_withheld:
            error = 'no resume tried: %s' % recovery.resume_withheld
        LOG.error('nova-livemig-ext: post-copy live migration to %(dest)s '
                  'could not be completed within %(timeout)d s '
                  '(%(attempts)d resume attempts, source %(source)s, last '
                  'error: %(error)s). Both halves of the guest are kept; '
                  'nothing was rolled back. Resume it on this host with: '
                  '%(command)s',
                  {'dest': dest, 'timeout': policy.postcopy_recovery_timeout_s,
                   'attempts': recovery.resume_attempts if recovery else 0,
                   'source': recovery.source if recovery else '-',
                   'error': error, 'command': command},
                  instance=instance)
        return PostcopyRecoveryNeeded(
            source_host=instance.host, command=command,
            detail='Both halves were kept; see troubleshooting docs.')

    @staticmethod
    def _livemig_abort_reason(report):
        reasons = [a.decision.reason for a in report.decisions
                   if a.applied and a.decision.action is
                   livemig_monitor.ctl.Action.ABORT]
        return reasons[-1] if reasons else 'no reason recorded'

    # --- across restarts ---------------------------------------------------

    def _livemig_remember(self, instance_uuid, **fields):
        """Keep what a restart needs; never let that stop a migration."""
        if self.livemig_records is None:
            return
        try:
            self.livemig_records.update(instance_uuid, **fields)
        except Exception as e:
            LOG.warning('nova-livemig-ext: could not write the live migration '
                        'record of %(uuid)s (a restart of nova-compute during '
                        'this migration could not finish it): %(error)s',
                        {'uuid': instance_uuid, 'error': e})

    def _livemig_forget(self, instance_uuid):
        if self.livemig_records is None:
            return
        try:
            self.livemig_records.remove(instance_uuid)
        except Exception as e:
            LOG.warning('nova-livemig-ext: could not remove the live '
                        'migration record of %(uuid)s: %(error)s',
                        {'uuid': instance_uuid, 'error': e})

    def _livemig_finish_interrupted(self):
        """Bring migrations a previous nova-compute left behind to an end.

        A pre-copy job still running unwatched is aborted (the source keeps
        the guest) and Nova rolls back; after the switch to post-copy the
        migration is resumed or found complete and Nova completes it, or it
        is left to an operator with both halves kept.
        """
        uuids = self.livemig_records.instance_uuids()
        if not uuids:
            return
        context = nova_context.get_admin_context()
        for uuid in uuids:
            try:
                self._livemig_finish_one(context, uuid)
            except Exception:
                LOG.exception('nova-livemig-ext: could not finish the '
                              'interrupted live migration of instance %s; '
                              'its record is kept for the next start', uuid)

    def _livemig_finish_one(self, context, uuid):
        record = self.livemig_records.read(uuid)
        if not record or 'migrate_data' not in record:
            self.livemig_records.remove(uuid)
            return
        try:
            instance = objects.Instance.get_by_uuid(
                context, uuid, expected_attrs=['info_cache', 'flavor',
                                               'system_metadata'])
        except exception.InstanceNotFound:
            self.livemig_records.remove(uuid)
            return
        if instance.host != self.livemig_host:
            # Nova has it elsewhere already: nothing of ours is pending.
            self.livemig_records.remove(uuid)
            return
        migrate_data = objects_base.NovaObject.obj_from_primitive(
            record['migrate_data'], context=context)
        # The record's copy is as old as the migration: read it again.
        migration = objects.Migration.get_by_id(context,
                                                migrate_data.migration.id)
        migrate_data.migration = migration
        dest = record['dest']
        try:
            domain = self._host.get_guest(instance)._domain
        except exception.InstanceNotFound:
            domain = None
        errors = livemig_monitor.ErrorClassifier((_libvirt().libvirtError,))
        source = livemig_postcopy.read_view(
            domain, errors.is_libvirt_error, errors.domain_gone)
        if domain is None:
            source = livemig_postcopy.ABSENT
        where = livemig_postcopy.judge(source, livemig_postcopy.UNREACHABLE)
        LOG.warning('nova-livemig-ext: live migration to %(dest)s was '
                    'interrupted (migration %(status)s, source %(source)s): '
                    '%(where)s', {'dest': dest, 'status': migration.status,
                                  'source': source, 'where': where.value},
                    instance=instance)
        if where is livemig_postcopy.Where.NOT_SWITCHED:
            self._livemig_end_precopy(context, instance, domain, errors,
                                      dest, migrate_data)
            return
        if where is not livemig_postcopy.Where.COMPLETED:
            where = self._livemig_resume_at_start(instance, domain, errors,
                                                  record)
        if where is livemig_postcopy.Where.COMPLETED:
            self._livemig_complete_in_nova(context, instance, dest, record,
                                           migrate_data)
            return
        self._livemig_leave_to_operator(context, instance, dest, record,
                                        migration, where)

    def _livemig_end_precopy(self, context, instance, domain, errors, dest,
                             migrate_data):
        """Abort an unwatched pre-copy job, resume the source, roll back."""
        try:
            job = domain.jobStats()
            running = job.get('type') == _libvirt().VIR_DOMAIN_JOB_UNBOUNDED
        except Exception as e:
            LOG.info('nova-livemig-ext: no job information: %s', e,
                     instance=instance)
            running = False
        if running:
            LOG.warning('nova-livemig-ext: aborting the unwatched pre-copy '
                        'job; the guest keeps running on this host',
                        instance=instance)
            try:
                livemig_monitor.abort_job_and_wait(domain, ABORT_WAIT_S,
                                                   time.sleep)
            except Exception as e:
                LOG.warning('nova-livemig-ext: abort failed: %s', e,
                            instance=instance)
        state = livemig_postcopy.read_view(domain, errors.is_libvirt_error,
                                           errors.domain_gone)
        if (state.present and state.state == livemig_postcopy.VIR_DOMAIN_PAUSED
                and instance.vm_state != vm_states.PAUSED):
            # Paused by the interrupted migration (our pause rung, or the
            # start of its switchover): the guest was running before.
            try:
                domain.resume()
                LOG.info('nova-livemig-ext: resumed the guest on this host',
                         instance=instance)
            except Exception as e:
                LOG.warning('nova-livemig-ext: could not resume the guest: '
                            '%s', e, instance=instance)
        # Nova's own start would mark a 'running' migration 'error': the
        # rollback below ends it as what it is, a failed migration.
        migrate_data.migration.status = 'failed'
        migrate_data.migration.save()

        def rollback(compute, source_bdms):
            instance.task_state = task_states.MIGRATING
            instance.save()
            compute._rollback_live_migration(
                context, instance, dest, migrate_data,
                migration_status='failed', source_bdms=source_bdms)
            LOG.warning('nova-livemig-ext: the interrupted live migration '
                        'was rolled back; the guest runs on this host',
                        instance=instance)

        self._livemig_when_nova_ready(context, instance, rollback)

    def _livemig_resume_at_start(self, instance, domain, errors, record):
        """Watch and resume a post-copy migration, briefly, at start."""
        call = record.get('call')
        if domain is None or not call:
            return livemig_postcopy.Where.UNKNOWN
        dconnuri, params, flags = call
        planned = PlannedDomain(domain, None)
        planned.call = (dconnuri, params, flags)
        timeout_s = min(float(self.livemig_policy.postcopy_recovery_timeout_s),
                        RESTART_RECOVERY_S)
        log = InstanceLog(LOG, {'instance': instance})

        def views():
            return (livemig_postcopy.read_view(domain, errors.is_libvirt_error,
                                               errors.domain_gone),
                    livemig_postcopy.UNREACHABLE)

        # This host's libvirt stands for the destination's here.
        settled = livemig_postcopy.settle(
            views, planned.resume_postcopy, time.monotonic, time.sleep,
            timeout_s, errors.is_libvirt_error, log=log,
            hazard=livemig_postcopy.resume_hazard(
                livemig_postcopy.libvirt_version_of(domain),
                self.livemig_policy.postcopy_resume))
        return settled.where

    def _livemig_complete_in_nova(self, context, instance, dest, record,
                                  migrate_data):
        """The guest runs on the destination: do Nova's part of the end."""
        LOG.warning('nova-livemig-ext: the interrupted live migration to '
                    '%s completed; finishing it in Nova', dest,
                    instance=instance)

        def complete(compute, source_bdms):
            instance.vm_state = vm_states.ACTIVE
            instance.task_state = task_states.MIGRATING
            instance.save()
            compute._post_live_migration_update_host(
                context, instance, dest, record.get('block_migration', False),
                migrate_data, source_bdms=source_bdms)
            LOG.info('nova-livemig-ext: the interrupted live migration to '
                     '%s is complete in Nova', dest, instance=instance)

        self._livemig_when_nova_ready(context, instance, complete)

    def _livemig_when_nova_ready(self, context, instance, finish):
        """Run ``finish(compute_manager, source_bdms)`` once Nova can.

        Nova's post-migration and rollback need the resource tracker set up
        by nova-compute after ``init_host``; the libvirt side is already
        settled, so this only waits. The record goes once it is done.
        """
        compute = self.virtapi._compute
        source_bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)

        def run():
            deadline_s = time.monotonic() + NOVA_READY_WAIT_S
            while getattr(compute.rt, 'pci_tracker', None) is None:
                if time.monotonic() > deadline_s:
                    LOG.error('nova-livemig-ext: nova-compute never became '
                              'ready; the interrupted live migration is '
                              'finished at the next start',
                              instance=instance)
                    return
                time.sleep(1.0)
            try:
                finish(compute, source_bdms)
            except Exception:
                LOG.exception('nova-livemig-ext: finishing the interrupted '
                              'live migration in Nova failed; its record is '
                              'kept for the next start', instance=instance)
                return
            self.livemig_records.remove(instance.uuid)

        novacompat.spawn(run)

    def _livemig_leave_to_operator(self, context, instance, dest, record,
                                   migration, where):
        command = self._livemig_recover_command(instance, dest,
                                                record.get('call'))
        LOG.error('nova-livemig-ext: the interrupted post-copy live '
                  'migration to %(dest)s is %(where)s and could not be '
                  'completed at start. Both halves are kept. Resume it on '
                  'this host with: %(command)s, then restart nova-compute '
                  'to finish it in Nova',
                  {'dest': dest, 'where': where.value, 'command': command},
                  instance=instance)
        needed = PostcopyRecoveryNeeded(
            source_host=instance.host, command=command,
            detail='Then restart nova-compute there.')
        compute_utils.add_instance_fault_from_exc(context, instance, needed)
        migration.status = 'error'
        migration.save()
        instance.vm_state = vm_states.ERROR
        instance.task_state = None
        instance.save()

    def live_migration_abort(self, instance):
        # Nova's server-migration abort: remember who asked, then abort.
        self.livemig_operator_aborts.add(instance.uuid)
        return super().live_migration_abort(instance)

    def _livemig_outcome(self, guest, instance, future, report):
        """How the job ended, as libvirt tells it (Nova's own rules)."""
        if report.outcome is not livemig_monitor.Outcome.UNKNOWN:
            return report.outcome
        lv = _libvirt()
        try:
            job_type = guest.get_job_info().type
        except lv.libvirtError as e:
            # Statistics that cannot be read say nothing about the end.
            LOG.warning('Live migration: job information unavailable: %s',
                        e, instance=instance)
            job_type = lv.VIR_DOMAIN_JOB_NONE
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
                 '%(total).1f s, guest %(guest)s (predicted %(predicted)s); '
                 'libvirt downtime %(downtime)s, %(iterations)s iterations, '
                 '%(sent)s bytes sent, rungs used: %(rungs)s',
                 {'outcome': report.outcome.value, 'total': report.total_s,
                  'guest': (report.guest.text() if report.guest is not None
                            else 'cost unknown'),
                  'predicted': (report.predicted_guest.text()
                                if report.predicted_guest is not None
                                else 'unknown'),
                  'downtime': livemig_monitor.downtime_text(report),
                  'iterations': report.iterations,
                  'sent': report.memory_sent_bytes, 'rungs': rungs},
                 instance=instance)

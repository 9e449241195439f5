"""The libvirt driver with nova-livemig-ext's live-migration path.

A thin subclass of Nova's ``LibvirtDriver``: it changes how flags and
parameters are chosen and which monitor watches a running migration, and
leaves every other behaviour of Nova alone.

Load it with ``compute_driver = livemig_ext.LibvirtLiveMigExtDriver`` in
``[DEFAULT]``.
"""

import logging as std_logging
import os
import shlex
import threading
import time

from oslo_log import log as logging

from nova.compute import task_states
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
from nova_livemig_ext import peer as livemig_peer
from nova_livemig_ext import policy as livemig_policy
from nova_livemig_ext import postcopy as livemig_postcopy
from nova_livemig_ext import records as livemig_records
from nova_livemig_ext import standin as livemig_standin

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
# How long one look at another host's libvirt may take (connect, lookup,
# state) before that host counts as out of reach.
PEER_PROBE_S = 10.0
# After a give-back (see nova_livemig_ext.standin and [livemig_ext]
# postcopy_give_back_address): what the operator must know and do.
GIVEN_BACK_TEXT = (
    'The destination %(dest)s failed to load the guest at the switch to '
    'post-copy and never ran it; the guest was given back to %(source)s, '
    'which runs it with all of its memory. libvirt on %(source)s keeps the '
    'failed migration job until the guest is hard rebooted (openstack server '
    'reboot --hard): until then it refuses to migrate the guest again.')

# What a tenant reads in the instance fault (``GET /servers/{id}``): no host,
# URI or command; admins get those in the fault's details and the log.
RECOVERY_FAULT = 'Live migration needs operator recovery'
FAILED_FAULT = 'Live migration failed'
# The lock that keeps a tenant from deleting, rebooting or rebuilding an
# instance whose two halves wait for an operator; lifted at the start that
# finishes the migration.
RECOVERY_LOCK_REASON = ('nova-livemig-ext: live migration waiting for '
                        'operator recovery')

# Nova decides per call whether disks are copied (it drops NON_SHARED_INC
# when there is nothing to copy); every other flag comes from our plan.
NOVA_OWNED_FLAGS = livemig_flags.FLAG_VALUES['VIR_MIGRATE_NON_SHARED_INC']


# A domain in one of these (state, reason) pairs is half of a post-copy
# migration: running or paused on the destination, or the source's half.
POSTCOPY_REASONS = {
    livemig_postcopy.VIR_DOMAIN_RUNNING: (
        livemig_postcopy.VIR_DOMAIN_RUNNING_POSTCOPY,
        livemig_postcopy.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED),
    livemig_postcopy.VIR_DOMAIN_PAUSED: (
        livemig_postcopy.VIR_DOMAIN_PAUSED_POSTCOPY,
        livemig_postcopy.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED),
}


def _peer_thread(target):
    """A thread for reading a peer's libvirt through Nova's Host.

    Nova's connections go through eventlet's thread pool when nova-compute
    runs under eventlet: from a native thread they never return. A thread of
    the (possibly patched) threading module is a green thread there and a
    native one in Nova's native threading mode.
    """
    thread = threading.Thread(target=target, name='livemig-peer',
                              daemon=True)
    thread.start()
    return thread


class MigrationGivenBack(exception.NovaException):
    """The destination never ran the guest and it was given back to the
    source, while libvirt's migration call had not returned an error."""

    msg_fmt = _('Live migration failed: %(reason)s')


class PostcopyRecoveryNeeded(exception.NovaException):
    """Post-copy could not be completed: both halves kept for an operator.

    Raised out of the driver's live migration so that Nova's compute manager
    sets the migration to ``error`` and the instance to ERROR without a
    rollback. Its message is what a tenant may read; ``details`` (hosts,
    URIs, the command) goes to the log and to the fault's details, which
    Nova shows to admins only.
    """

    msg_fmt = _('Live migration needs operator recovery')

    @property
    def details(self):
        return self.kwargs.get('details', '')


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

    # The driver logs the summary (livemig_log_summary): one line, not two.
    log_summary = False

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
        # instance uuid -> destination, for the guests this start found on
        # their destination while Nova still has them here: Nova's start-up
        # must not touch them until Nova's part of the migration is done.
        self.livemig_moved = {}

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
        # Looking at other hosts can take a while: never hold up the start.
        novacompat.spawn(self._livemig_check_incoming)

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
        fields = dict(dest=dest, block_migration=bool(block_migration),
                      migrate_data=migrate_data.obj_to_primitive(),
                      vm_state=instance.vm_state)
        source_bdms = self._livemig_nova_source_bdms(post_method,
                                                     recover_method)
        if source_bdms is not None:
            fields['source_bdms'] = source_bdms.obj_to_primitive()
        else:
            LOG.warning('nova-livemig-ext: Nova did not hand over the '
                        'block device mappings of the source; should '
                        'nova-compute restart during this migration, its '
                        'volume attachments must be checked by hand',
                        instance=instance)
        self._livemig_remember(instance.uuid, **fields)
        try:
            return super()._live_migration(
                context, instance, dest, post_method, recover_method,
                block_migration, migrate_data)
        finally:
            self.livemig_jobs.pop(instance.uuid, None)
            self.livemig_errors.pop(instance.uuid, None)
            self.livemig_calls.pop(instance.uuid, None)
            self.livemig_operator_aborts.discard(instance.uuid)

    @staticmethod
    def _livemig_nova_source_bdms(*methods):
        """The block device mappings as they were before
        ``pre_live_migration`` gave them the destination's attachments.

        Nova's ``_do_live_migration`` binds them as ``source_bdms`` into
        the post and rollback methods it hands the driver.
        """
        for method in methods:
            bdms = (getattr(method, 'keywords', None) or {}).get(
                'source_bdms')
            if bdms is not None:
                return bdms
        return None

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
        # Handed the migrate call's future itself (Nova 32.2 and later),
        # Nova's _live_migration raises the call's error once the monitor
        # returns: a failed job ends with the instance in ERROR.
        nova_surfaces_errors = callable(getattr(future, 'result', None))
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
            if report.ended_by is livemig_monitor.EndedBy.POSTCOPY_BROKEN:
                # The monitor already gave up on the call: while it blocks,
                # the guest waits paused on the source.
                deadline_s = time.monotonic()
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
                    LOG.info('Live migration cancelled at the operator\'s '
                             'request (libvirt ended the job with: %s); the '
                             'guest stays on this host', error,
                             instance=instance)
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
                # Nova records no fault for an error raised in its live
                # migration thread: the operator would see only ERROR.
                self._livemig_add_fault(context, instance, RECOVERY_FAULT,
                                        needed.details)
                try:
                    self._livemig_lock(instance)
                    instance.save()
                except Exception as e:
                    LOG.warning('nova-livemig-ext: could not lock the '
                                'instance: %s', e, instance=instance)
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
                given_back = (report.recovery is not None
                              and report.recovery.given_back)
                if given_back:
                    LOG.warning('nova-livemig-ext: %s', GIVEN_BACK_TEXT
                                % {'source': instance.host, 'dest': dest},
                                instance=instance)
                recover_method(context, instance, dest, migrate_data)
                if given_back and error is None:
                    # Given back while libvirt's call had not returned: its
                    # error may have come since, else the report's stands.
                    error = (self.livemig_errors.get(instance.uuid)
                             or MigrationGivenBack(reason=report.error))
                if error is not None and nova_surfaces_errors:
                    # As Nova's own driver on this release: its
                    # _live_migration collects the migrate call's error
                    # from the future, and its compute manager then sets
                    # the migration to error and the instance to ERROR.
                    self._livemig_add_fault(
                        context, instance, FAILED_FAULT,
                        'Live migration from %s to %s failed: %s. It was '
                        'rolled back: the guest runs on %s.%s'
                        % (instance.host, dest, error, instance.host,
                           ' ' + GIVEN_BACK_TEXT % {'source': instance.host,
                                                    'dest': dest}
                           if given_back else ''))
                    raise error
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
        resume = livemig_postcopy.bounded(
            planned.resume_postcopy if planned is not None
            else PlannedDomain(monitor.domain, None).resume_postcopy,
            livemig_postcopy.RESUME_CALL_TIMEOUT_S,
            livemig_monitor.daemon_thread)
        # The destination's libvirt is read too (read-only, each read
        # bounded): only its word that it shut the guest off as failed, or
        # that its QEMU never started the guest (that QEMU is then stopped
        # first), lets the source run the guest again. Unreachable, it
        # changes nothing: libvirt marks the source POSTCOPY_FAILED when its
        # peer connection breaks.
        peer = self._livemig_dest_peer(instance, dest, planned)
        try:
            return livemig_monitor.settle_postcopy(
                monitor, report, resume, None,
                float(policy.postcopy_recovery_timeout_s),
                policy.postcopy_resume,
                give_back_address=livemig_standin.address_or_none(
                    policy.postcopy_give_back_address),
                dest_peer=peer)
        finally:
            peer.close()

    def _livemig_dest_peer(self, instance, dest, planned):
        """The guest on the destination's libvirt, each read bounded."""
        errors = livemig_monitor.ErrorClassifier((_libvirt().libvirtError,))
        call = planned.call if planned is not None else None

        def open_connection():
            return self._host._connect(self._livemig_dest_uri(dest, call),
                                       True)

        def open_writable():
            # Only to stop a destination QEMU stuck before it ran the guest.
            return self._host._connect(self._livemig_dest_uri(dest, call),
                                       False)

        return livemig_peer.BoundedPeer(
            open_connection, instance.uuid, errors.is_libvirt_error,
            errors.domain_gone, _peer_thread, open_writable=open_writable)

    def _livemig_recover_command(self, instance, dest, call):
        """The command that resumes this migration by hand on this host,
        every argument quoted for a shell.

        ``call`` is the migrate call made (its URI is what the source
        libvirtd dials, its parameters where the stream went), or None when
        it is not known.
        """
        dest_uri = call[0] if call else self._live_migration_uri(dest)
        params = call[1] if call else {}
        argv = ['nova-livemig-ext', 'recover', instance.name,
                '--from', self._host._uri, '--to', dest_uri]
        for option, name in (('--migrate-uri', livemig_flags.PARAM_URI),
                             ('--listen-address',
                              livemig_flags.PARAM_LISTEN_ADDRESS)):
            if params.get(name):
                argv += [option, str(params[name])]
        for path in CONF.config_file or ():
            argv += ['--config-file', path]
        return shlex.join(argv)

    @staticmethod
    def _livemig_unlock_text(instance):
        return ('The instance is locked against delete, reboot and rebuild '
                '(reason "%s") so that nothing destroys a half of the guest; '
                'the start of nova-compute that finishes the migration '
                'unlocks it. Once it is settled by other means, an admin '
                'unlocks it with: openstack server unlock %s'
                % (RECOVERY_LOCK_REASON, instance.uuid))

    def _livemig_recovery_needed(self, instance, dest, report, policy):
        planned = self.livemig_calls.get(instance.uuid)
        command = self._livemig_recover_command(
            instance, dest, None if planned is None else planned.call)
        recovery = report.recovery
        error = (recovery.last_error if recovery else None) or report.error
        if recovery is not None and recovery.resume_withheld:
            error = 'no resume tried: %s' % recovery.resume_withheld
        details = (
            'Post-copy live migration from %(source)s to %(dest)s could not '
            'be completed within %(timeout)d s (%(attempts)d resume '
            'attempts, source %(view)s, destination %(dest_view)s, last '
            'error: %(error)s). Both halves '
            'of the guest are kept; nothing was rolled back. Resume it on '
            '%(source)s with: %(command)s, then restart nova-compute there '
            'to finish it in Nova. %(unlock)s'
            % {'source': instance.host, 'dest': dest,
               'timeout': policy.postcopy_recovery_timeout_s,
               'attempts': recovery.resume_attempts if recovery else 0,
               'view': recovery.source if recovery else '-',
               'dest_view': recovery.dest if recovery else '-',
               'error': error, 'command': command,
               'unlock': self._livemig_unlock_text(instance)})
        LOG.error('nova-livemig-ext: %s', details, instance=instance)
        return PostcopyRecoveryNeeded(details=details)

    def _livemig_add_fault(self, context, instance, message, details):
        """An instance fault whose message a tenant may read (<= 255
        characters, no host or URI) and whose details only admins see.

        Nova shows a fault's details to admins only when its code is 500;
        ``add_instance_fault_from_exc`` would put a traceback there.
        """
        try:
            objects.InstanceFault(
                context=context, instance_uuid=instance.uuid,
                host=self.livemig_host or CONF.host, code=500,
                message=message[:255], details=details).create()
        except Exception as e:
            LOG.warning('nova-livemig-ext: could not record the instance '
                        'fault: %s', e, instance=instance)

    @staticmethod
    def _livemig_lock(instance):
        """Lock the instance for the operator's recovery (not saved)."""
        instance.locked = True
        instance.locked_by = 'admin'
        instance.system_metadata['locked_reason'] = RECOVERY_LOCK_REASON

    def _livemig_unlock(self, context, instance_uuid):
        """Lift the recovery lock, and only ours (an operator's stays)."""
        try:
            instance = objects.Instance.get_by_uuid(
                context, instance_uuid, expected_attrs=['system_metadata'])
            if not (instance.locked and instance.system_metadata.get(
                    'locked_reason') == RECOVERY_LOCK_REASON):
                return
            instance.locked = False
            instance.locked_by = None
            instance.system_metadata.pop('locked_reason', None)
            instance.save()
            LOG.info('nova-livemig-ext: unlocked the instance, its live '
                     'migration is finished', instance=instance)
        except Exception as e:
            LOG.warning('nova-livemig-ext: could not unlock instance '
                        '%(uuid)s (an admin unlocks it with: openstack server '
                        'unlock %(uuid)s): %(error)s',
                        {'uuid': instance_uuid, 'error': e})

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

        A pre-copy job still running unwatched is aborted; then both hosts
        are looked at again: a guest the source still holds is rolled back
        by Nova, one that completed meanwhile is completed. After the
        switch to post-copy the migration is resumed or found complete and
        Nova completes it. Whatever cannot be told or finished is left to
        an operator with both halves kept, the instance locked.
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
        source_bdms = self._livemig_source_bdms(context, instance, record)
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
        dest_view = self._livemig_dest_view(instance, dest, record)
        where = livemig_postcopy.judge(source, dest_view)
        LOG.warning('nova-livemig-ext: live migration to %(dest)s was '
                    'interrupted (migration %(status)s, source %(source)s, '
                    'destination %(dest_view)s): %(where)s',
                    {'dest': dest, 'status': migration.status,
                     'source': source, 'dest_view': dest_view,
                     'where': where.value}, instance=instance)
        if where is livemig_postcopy.Where.NOT_SWITCHED:
            where, source, dest_view = self._livemig_end_precopy(
                instance, domain, errors, dest, record)
            if where is livemig_postcopy.Where.NOT_SWITCHED:
                self._livemig_rollback_in_nova(context, instance, dest,
                                               record, migrate_data,
                                               source_bdms)
                return
            if where in (livemig_postcopy.Where.POSTCOPY,
                         livemig_postcopy.Where.BROKEN,
                         livemig_postcopy.Where.DEST_STUCK):
                where, source, dest_view = self._livemig_resume_at_start(
                    instance, domain, errors, record, where, source,
                    dest_view)
        elif where is not livemig_postcopy.Where.COMPLETED:
            where, source, dest_view = self._livemig_resume_at_start(
                instance, domain, errors, record, where, source, dest_view)
        if where is livemig_postcopy.Where.COMPLETED:
            self._livemig_complete_in_nova(context, instance, dest, record,
                                           migrate_data, source_bdms)
            return
        self._livemig_leave_to_operator(context, instance, dest, record,
                                        migration, where, source, dest_view)

    def _livemig_source_bdms(self, context, instance, record):
        """The block device mappings with the source's volume attachments,
        as the migration started."""
        primitive = record.get('source_bdms')
        if primitive is not None:
            return objects_base.NovaObject.obj_from_primitive(
                primitive, context=context)
        current = objects.BlockDeviceMappingList.get_by_instance_uuid(
            context, instance.uuid)
        if any(bdm.is_volume for bdm in current):
            LOG.warning('nova-livemig-ext: the live migration record was '
                        'written by an older nova-livemig-ext, without the '
                        'source\'s block device mappings: finishing with '
                        'the current ones, which may name the destination\'s '
                        'volume attachments. Check this instance\'s volume '
                        'attachments (openstack volume attachment list) '
                        'once it is finished', instance=instance)
        return current

    def _livemig_peer_view(self, uri, instance):
        """What another host's libvirt, at ``uri``, says of the guest.

        Never required: a host that cannot be reached (or answer within
        ``PEER_PROBE_S`` per call) is UNREACHABLE. Read-only, touches
        nothing.
        """
        errors = livemig_monitor.ErrorClassifier((_libvirt().libvirtError,))
        peer = livemig_peer.BoundedPeer(
            lambda: self._host._connect(uri, True), instance.uuid,
            errors.is_libvirt_error, errors.domain_gone,
            _peer_thread, timeout_s=PEER_PROBE_S)
        try:
            view = peer.view()
        finally:
            peer.close()
        if not view.reachable:
            LOG.info('nova-livemig-ext: the libvirt at %(uri)s cannot be '
                     'read (%(why)s)', {'uri': uri, 'why': peer.last_error},
                     instance=instance)
        return view

    def _livemig_dest_uri(self, dest, call):
        """The URI this process reads the destination's libvirt with:
        ``[livemig_ext] destination_libvirt_uri``, else the migration's."""
        template = self.livemig_policy.destination_libvirt_uri
        if template:
            return template % dest
        return call[0] if call else self._live_migration_uri(dest)

    def _livemig_dest_view(self, instance, dest, record):
        """The destination's view of the guest, when it can be had."""
        try:
            uri = self._livemig_dest_uri(dest, record.get('call'))
        except Exception as e:
            LOG.info('nova-livemig-ext: no URI for the destination\'s '
                     'libvirt: %s', e, instance=instance)
            return livemig_postcopy.UNREACHABLE
        return self._livemig_peer_view(uri, instance)

    @staticmethod
    def _livemig_job_running(domain):
        try:
            return (domain.jobStats().get('type')
                    == _libvirt().VIR_DOMAIN_JOB_UNBOUNDED)
        except Exception:
            # A job whose statistics cannot be read is not known to run.
            return False

    def _livemig_end_precopy(self, instance, domain, errors, dest, record):
        """Abort an unwatched pre-copy job, then look again at both hosts.

        Returns (where, source view, destination view) after the abort. The
        job may have completed, or switched to post-copy, before the abort
        took: only a source that still holds the guest (NOT_SWITCHED) is
        rolled back, and a guest paused by the migration is resumed then.
        """
        if self._livemig_job_running(domain):
            LOG.warning('nova-livemig-ext: aborting the unwatched pre-copy '
                        'job; the guest keeps running on this host',
                        instance=instance)
            try:
                livemig_monitor.abort_job_and_wait(domain, ABORT_WAIT_S,
                                                   time.sleep)
            except Exception as e:
                LOG.warning('nova-livemig-ext: abort failed: %s', e,
                            instance=instance)
        still_running = self._livemig_job_running(domain)
        source = livemig_postcopy.read_view(domain, errors.is_libvirt_error,
                                            errors.domain_gone)
        dest_view = self._livemig_dest_view(instance, dest, record)
        where = livemig_postcopy.judge(source, dest_view)
        if where is livemig_postcopy.Where.NOT_SWITCHED and still_running:
            # It may still complete: a rollback now could destroy the
            # guest on the destination.
            LOG.warning('nova-livemig-ext: the pre-copy job still runs %d s '
                        'after the abort', ABORT_WAIT_S, instance=instance)
            where = livemig_postcopy.Where.UNKNOWN
        if where is not livemig_postcopy.Where.NOT_SWITCHED:
            LOG.warning('nova-livemig-ext: after the abort the live '
                        'migration is %(where)s (source %(source)s, '
                        'destination %(dest_view)s): it is not rolled back',
                        {'where': where.value, 'source': source,
                         'dest_view': dest_view}, instance=instance)
            return where, source, dest_view
        if (source.state == livemig_postcopy.VIR_DOMAIN_PAUSED
                and instance.vm_state != vm_states.PAUSED
                and record.get('vm_state') != vm_states.PAUSED):
            # Paused by the interrupted migration (our pause rung, or the
            # start of its switchover): the guest was running before.
            try:
                domain.resume()
                LOG.info('nova-livemig-ext: resumed the guest on this host',
                         instance=instance)
            except Exception as e:
                LOG.warning('nova-livemig-ext: could not resume the guest: '
                            '%s', e, instance=instance)
        return where, source, dest_view

    def _livemig_rollback_in_nova(self, context, instance, dest, record,
                                  migrate_data, source_bdms):
        """The source holds the whole guest: Nova rolls the migration back."""
        # Nova's own start would mark a 'running' migration 'error': the
        # rollback below ends it as what it is, a failed migration.
        migrate_data.migration.status = 'failed'
        migrate_data.migration.save()

        def rollback(compute):
            if instance.vm_state == vm_states.ERROR:
                # Left to an operator at an earlier start.
                instance.vm_state = record.get('vm_state', vm_states.ACTIVE)
            instance.task_state = task_states.MIGRATING
            instance.save()
            compute._rollback_live_migration(
                context, instance, dest, migrate_data,
                migration_status='failed', source_bdms=source_bdms)
            LOG.warning('nova-livemig-ext: the interrupted live migration '
                        'was rolled back; the guest runs on this host',
                        instance=instance)

        self._livemig_when_nova_ready(context, instance, rollback)

    def _livemig_resume_at_start(self, instance, domain, errors, record,
                                 where, source, dest_view):
        """Watch and resume a post-copy migration, briefly, at start."""
        call = record.get('call')
        if domain is None or not call:
            return where, source, dest_view
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
            views, livemig_postcopy.bounded(
                planned.resume_postcopy, livemig_postcopy.RESUME_CALL_TIMEOUT_S,
                livemig_monitor.daemon_thread), time.monotonic, time.sleep,
            timeout_s, errors.is_libvirt_error, log=log,
            hazard=livemig_postcopy.resume_hazard(
                livemig_postcopy.libvirt_version_of(domain),
                self.livemig_policy.postcopy_resume))
        return settled.where, settled.source, dest_view

    def _livemig_complete_in_nova(self, context, instance, dest, record,
                                  migrate_data, source_bdms):
        """The guest runs on the destination: do Nova's part of the end."""
        LOG.warning('nova-livemig-ext: the interrupted live migration to '
                    '%s completed; finishing it in Nova', dest,
                    instance=instance)
        # Until Nova's part is done Nova still has the instance here: its
        # start-up must not restart the guest (see resume_state_on_host_boot
        # and process_instances_at_startup).
        self.livemig_moved[instance.uuid] = dest

        def complete(compute):
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
        """Run ``finish(compute_manager)`` once Nova can.

        Nova's post-migration and rollback need the resource tracker set up
        by nova-compute after ``init_host``; the libvirt side is already
        settled, so this only waits. The record goes once it is done, and
        the recovery lock with it.
        """
        compute = self.virtapi._compute

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
                finish(compute)
            except Exception:
                LOG.exception('nova-livemig-ext: finishing the interrupted '
                              'live migration in Nova failed; its record is '
                              'kept for the next start', instance=instance)
                return
            self._livemig_unlock(context, instance.uuid)
            self.livemig_records.remove(instance.uuid)
            self.livemig_moved.pop(instance.uuid, None)

        novacompat.spawn(run)

    def _livemig_leave_to_operator(self, context, instance, dest, record,
                                   migration, where, source, dest_view):
        """Keep both halves, tell an operator, lock the instance."""
        command = self._livemig_recover_command(instance, dest,
                                                record.get('call'))
        details = (
            'The interrupted live migration from %(source_host)s to %(dest)s '
            'is %(where)s (source %(source)s, destination %(dest_view)s) and '
            'was not finished at start; nothing was rolled back or '
            'destroyed. Find which host runs the guest. To resume or '
            'complete the migration run on %(source_host)s: %(command)s, '
            'then restart nova-compute there to finish it in Nova. '
            '%(unlock)s'
            % {'source_host': instance.host, 'dest': dest,
               'where': where.value, 'source': source,
               'dest_view': dest_view, 'command': command,
               'unlock': self._livemig_unlock_text(instance)})
        LOG.error('nova-livemig-ext: %s', details, instance=instance)
        self._livemig_add_fault(context, instance, RECOVERY_FAULT, details)
        migration.status = 'error'
        migration.save()
        instance.vm_state = vm_states.ERROR
        instance.task_state = None
        self._livemig_lock(instance)
        instance.save()

    def _livemig_check_incoming(self):
        """Say what to do with the destination half of a post-copy
        migration whose source host cannot be reached.

        The records and the recovery live on the source: when that host
        dies after the switch, nothing else tells an operator that this
        host runs half a guest. Only logs; touches nothing.
        """
        try:
            guests = self._host.list_guests(only_running=True)
        except Exception as e:
            LOG.info('nova-livemig-ext: cannot list this host\'s guests to '
                     'look for interrupted post-copy migrations: %s', e)
            return
        context = nova_context.get_admin_context()
        for guest in guests:
            try:
                self._livemig_check_incoming_one(context, guest)
            except Exception:
                LOG.exception('nova-livemig-ext: could not check domain %s '
                              'for an interrupted post-copy migration',
                              guest.uuid)

    def _livemig_check_incoming_one(self, context, guest):
        errors = livemig_monitor.ErrorClassifier((_libvirt().libvirtError,))
        here = livemig_postcopy.read_view(guest._domain,
                                          errors.is_libvirt_error,
                                          errors.domain_gone)
        if (here.reason not in POSTCOPY_REASONS.get(here.state, ())
                or not here.present):
            return
        try:
            instance = objects.Instance.get_by_uuid(context, guest.uuid)
        except exception.InstanceNotFound:
            return
        if instance.host == self.livemig_host or not instance.host:
            # This host is the source: its records cover it.
            return
        source_host = instance.host
        try:
            uri = self._live_migration_uri(source_host)
        except Exception:
            uri = None
        source = (self._livemig_peer_view(uri, instance) if uri
                  else livemig_postcopy.UNREACHABLE)
        values = {'source_host': source_host, 'name': guest.name,
                  'here': here, 'source': source, 'uri': uri,
                  'uuid': instance.uuid}
        if source.reachable:
            LOG.warning('nova-livemig-ext: this host holds the destination '
                        'half of the post-copy live migration from '
                        '%(source_host)s (here %(here)s, source %(source)s); '
                        'nova-compute on %(source_host)s recovers or '
                        'completes it at its start', values,
                        instance=instance)
            return
        LOG.error('nova-livemig-ext: this host holds the destination half '
                  'of the post-copy live migration from %(source_host)s '
                  '(domain %(name)s, %(here)s), and %(source_host)s\'s '
                  'libvirt cannot be reached at %(uri)s. Nothing was '
                  'changed. If %(source_host)s comes back, its nova-compute '
                  'recovers the migration at its start. If %(source_host)s '
                  'is lost, so are the guest\'s memory pages not yet copied '
                  'here: the guest cannot be completed. Once that is '
                  'decided: destroy this half (virsh destroy %(name)s; the '
                  'disks stay), reset the instance with os-resetState '
                  '(openstack server set --state error %(uuid)s), unlock it '
                  'if it is locked (openstack server unlock %(uuid)s), then '
                  'evacuate it from %(source_host)s once that service is '
                  'down (openstack server evacuate %(uuid)s), or restore it '
                  'from a backup. See the troubleshooting guide, "The '
                  'source host died during post-copy"', values,
                  instance=instance)

    def _livemig_guest_left(self, instance):
        """The destination, when an interrupted migration may have left the
        guest running there while Nova still has it here; else None.

        Only a source that holds the whole guest (never switched) lets Nova
        decide: a domain gone, migrated, in post-copy or unreadable may mean
        that the destination runs it.
        """
        dest = self.livemig_moved.get(instance.uuid)
        if dest is not None or self.livemig_records is None:
            return dest
        record = self.livemig_records.read(instance.uuid)
        if not record:
            return None
        try:
            domain = self._host.get_guest(instance)._domain
        except exception.InstanceNotFound:
            return record.get('dest', 'its destination')
        errors = livemig_monitor.ErrorClassifier((_libvirt().libvirtError,))
        source = livemig_postcopy.read_view(domain, errors.is_libvirt_error,
                                            errors.domain_gone)
        if (livemig_postcopy.judge(source, livemig_postcopy.UNREACHABLE)
                is livemig_postcopy.Where.NOT_SWITCHED):
            return None
        return record.get('dest', 'its destination')

    def process_instances_at_startup(self, context, instances):
        # Nova 34 and later: the instances nova-compute's start goes through
        # (_init_instance). A guest this start found on its destination is
        # left out: Nova's part of the migration moves it there.
        moved = [i for i in instances if i.uuid in self.livemig_moved]
        for instance in moved:
            LOG.warning('nova-livemig-ext: Nova\'s start-up leaves this '
                        'instance alone: the interrupted live migration '
                        'left it running on %s, where Nova\'s part of the '
                        'migration moves it', self.livemig_moved[
                            instance.uuid], instance=instance)
        if moved:
            instances = objects.InstanceList(context, objects=[
                i for i in instances if i.uuid not in self.livemig_moved])
        parent = getattr(super(), 'process_instances_at_startup', None)
        if parent is None:
            return instances
        return parent(context, instances)

    def resume_state_on_host_boot(self, context, instance, *args, **kwargs):
        # With resume_guests_state_on_host_boot, Nova's start hard-reboots
        # an instance of this host whose domain it does not find running.
        # One whose interrupted live migration left it on its destination
        # must never be started here as well.
        dest = self._livemig_guest_left(instance)
        if dest is not None:
            LOG.warning('nova-livemig-ext: not starting the guest on this '
                        'host: its interrupted live migration left it '
                        'running on %s', dest, instance=instance)
            return None
        return super().resume_state_on_host_boot(context, instance, *args,
                                                 **kwargs)

    def live_migration_abort(self, instance):
        # Nova's server-migration abort: remember who asked, then abort.
        # (Nova's own start calls this too, for migrations it finds
        # running: only a migration this driver watches is the operator's.)
        if instance.uuid in self.livemig_jobs:
            self.livemig_operator_aborts.add(instance.uuid)
        return super().live_migration_abort(instance)

    def _livemig_outcome(self, guest, instance, future, report):
        """How the job ended, as libvirt tells it (Nova's own rules)."""
        if report.outcome is not livemig_monitor.Outcome.UNKNOWN:
            return report.outcome
        if report.ended_by is livemig_monitor.EndedBy.POSTCOPY_BROKEN:
            # libvirt's call may never return: settle without it.
            return livemig_monitor.Outcome.FAILED
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

"""Does a Nova configuration file load nova-livemig-ext's driver?

Run by devstack/plugin.sh at ``stack test-config`` with the Python that
nova-compute runs with::

    python3 devstack/check_driver.py /etc/nova/nova-cpu.conf

It asks Nova's own loader (``nova.virt.driver.load_compute_driver``) for the
configured ``compute_driver``, exactly as nova-compute does at start, and
builds the ``[livemig_ext]`` policy from the same file. Constructing the
driver does not connect to libvirt. Exit status 0 when both succeed.

With ``--options-only`` (``LIVEMIG_EXT_ENABLE_DRIVER=False``) only the
``[livemig_ext]`` options are checked.
"""

import sys


def main(argv):
    options_only = '--options-only' in argv[1:]
    paths = [a for a in argv[1:] if a != '--options-only']
    if len(paths) != 1:
        print('usage: check_driver.py [--options-only] NOVA_CONF',
              file=sys.stderr)
        return 2
    import nova.conf
    from nova.virt import driver as virt_driver

    from nova_livemig_ext import conf as livemig_conf
    from nova_livemig_ext import policy as livemig_policy

    conf = nova.conf.CONF
    livemig_conf.register_opts(conf)
    conf(['--config-file', paths[0]], project='nova',
         default_config_files=[])
    what = 'options only'
    if not options_only:
        # load_compute_driver exits the process itself when the import
        # fails.
        loaded = virt_driver.load_compute_driver(None)
        from nova_livemig_ext import driver as livemig_driver

        what = 'loads %s.%s' % (type(loaded).__module__,
                                type(loaded).__name__)
        if not isinstance(loaded, livemig_driver.LibvirtLiveMigExtDriver):
            print('compute_driver = %s %s, not LibvirtLiveMigExtDriver'
                  % (conf.compute_driver, what), file=sys.stderr)
            return 1
    try:
        policy = livemig_policy.policy_from_conf(conf)
    except livemig_policy.InvalidPolicy as e:
        print(e, file=sys.stderr)
        return 1
    print('nova-livemig-ext: %s %s; mode %s, ladder %s'
          % (paths[0], what, policy.mode, ','.join(policy.ladder) or '-'))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))

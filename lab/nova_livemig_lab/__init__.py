"""A real two-host libvirt + QEMU lab on one machine.

Two libvirtd daemons, each in its own mount and network namespace, play two
compute hosts.  They are joined by a veth pair whose sending sides are shaped
with ``tc tbf``, so that migrations cross a link with a real bandwidth limit
and a link cut is a real network fault.  A small guest (Debian cloud kernel,
busybox initramfs and a static program that dirties and checks its memory)
proves its own integrity through heartbeats on its serial console.

Entry points: :mod:`nova_livemig_lab.cli` (``python -m
nova_livemig_lab``) and :mod:`nova_livemig_lab.measure`.
"""

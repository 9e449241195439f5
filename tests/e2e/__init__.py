"""End-to-end tests against the real two-host libvirt + QEMU lab (root only)."""

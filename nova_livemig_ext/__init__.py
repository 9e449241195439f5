"""nova-livemig-ext: libvirt live migrations that finish within a deadline.

Kept import-free: the import hook installed at interpreter start imports this
package, so it must cost nothing and pull in neither Nova nor libvirt.
"""

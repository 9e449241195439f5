"""The devices of a guest that decide whether post-copy may be armed.

Pure: reads a libvirt domain XML document (``virDomainGetXMLDesc``), no
libvirt, no Nova. On the source host the running guest's XML is the most
reliable record of what QEMU actually has attached: Nova's instance object
does not load ``pci_devices`` on the live-migration path, and ports and
mediated devices appear there only indirectly.

Why these devices rule out post-copy:

* PCI passthrough and SR-IOV VFs (``<hostdev type='pci'>``,
  ``<interface type='hostdev'>``) and mediated devices such as vGPUs
  (``<hostdev type='mdev'>``) are VFIO devices: QEMU refuses to migrate
  VFIO devices with the postcopy-ram capability on, and a device that
  writes guest memory by DMA on the destination would bypass the page
  faults post-copy relies on.
* vDPA interfaces (``<interface type='vdpa'>``) are DMA-capable hardware
  too.
* vPMEM (``<memory model='nvdimm'>``) is file-backed memory that post-copy
  cannot fetch on demand.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree import ElementTree


@dataclass(frozen=True)
class GuestDevices:
    """Counts of the devices that matter to post-copy."""

    pci_hostdevs: int = 0
    sriov_interfaces: int = 0
    mdevs: int = 0
    nvdimms: int = 0

    @property
    def any(self) -> bool:
        return bool(self.pci_hostdevs or self.sriov_interfaces or self.mdevs
                    or self.nvdimms)


def from_domain_xml(xml: str) -> GuestDevices:
    """Count the post-copy-relevant devices in a domain's XML.

    Raises ``ValueError`` when ``xml`` is not a domain document.
    """
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as e:
        raise ValueError('the domain XML cannot be parsed: %s' % e) from e
    if root.tag != 'domain':
        raise ValueError('not a domain XML document: <%s>' % root.tag)
    devices = root.find('devices')
    if devices is None:
        return GuestDevices()
    hostdevs = devices.findall('hostdev')
    return GuestDevices(
        pci_hostdevs=sum(1 for h in hostdevs if h.get('type') == 'pci'),
        mdevs=sum(1 for h in hostdevs if h.get('type') == 'mdev'),
        sriov_interfaces=sum(
            1 for i in devices.findall('interface')
            if i.get('type') in ('hostdev', 'vdpa')),
        nvdimms=sum(1 for m in devices.findall('memory')
                    if m.get('model') == 'nvdimm'))

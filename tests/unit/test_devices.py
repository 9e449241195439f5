"""Devices read from a guest's libvirt XML."""

import testtools

from nova_livemig_ext import devices


def domain(*elements):
    return ("<domain type='kvm'><name>g</name><devices>%s</devices>"
            "</domain>" % ''.join(elements))


PCI = ("<hostdev mode='subsystem' type='pci' managed='yes'><source>"
       "<address domain='0x0000' bus='0x81' slot='0x00' function='0x1'/>"
       "</source></hostdev>")
MDEV = ("<hostdev mode='subsystem' type='mdev' model='vfio-pci'><source>"
        "<address uuid='c2177883-f1bb-47f0-914d-32a22e3a8804'/></source>"
        "</hostdev>")
SRIOV = ("<interface type='hostdev' managed='yes'><mac address='fa:16:3e:0"
         "0:00:01'/><source><address type='pci' domain='0x0000' bus='0x81'"
         " slot='0x00' function='0x2'/></source></interface>")
VDPA = "<interface type='vdpa'><source dev='/dev/vhost-vdpa-0'/></interface>"
NVDIMM = ("<memory model='nvdimm' access='shared'><source><path>/dev/dax0.0"
          "</path></source><target><size unit='KiB'>4194304</size></target>"
          "</memory>")
BRIDGE = "<interface type='bridge'><source bridge='br0'/></interface>"
USB = "<hostdev mode='subsystem' type='usb'><source/></hostdev>"
DIMM = "<memory model='dimm'><target><size unit='KiB'>1</size></target></memory>"


class FromDomainXmlTest(testtools.TestCase):

    CASES = [
        (domain(), devices.GuestDevices()),
        ("<domain type='kvm'><name>g</name></domain>",
         devices.GuestDevices()),
        (domain(BRIDGE, USB, DIMM), devices.GuestDevices()),
        (domain(PCI, PCI), devices.GuestDevices(pci_hostdevs=2)),
        (domain(MDEV), devices.GuestDevices(mdevs=1)),
        (domain(SRIOV, BRIDGE), devices.GuestDevices(sriov_interfaces=1)),
        (domain(VDPA), devices.GuestDevices(sriov_interfaces=1)),
        (domain(NVDIMM, DIMM), devices.GuestDevices(nvdimms=1)),
        (domain(PCI, MDEV, SRIOV, NVDIMM),
         devices.GuestDevices(1, 1, 1, 1)),
    ]

    def test_counts(self):
        for xml, want in self.CASES:
            got = devices.from_domain_xml(xml)
            self.assertEqual(want, got, xml)
            self.assertEqual(want != devices.GuestDevices(), got.any, xml)

    def test_not_a_domain(self):
        for xml in ('', '<domain>', '<network/>', 'null'):
            self.assertRaises(ValueError, devices.from_domain_xml, xml)

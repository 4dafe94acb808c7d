# Minimal x86_64 device set for ringcast's QEMU build (configure --without-default-devices
# --with-devices-x86_64=ringcast). With --without-default-devices every "default y" and every
# "imply" is off and only "select" propagates, so the boards have to be listed.

CONFIG_Q35=y            # -M q35; selects PC (isa-serial, RTC, PIT, ...), ICH9 LPC, AHCI
CONFIG_I440FX=y         # -M pc; selects PIIX, IDE, ACPI PIIX4
CONFIG_VIRTIO_PCI=y     # virtio-*-pci transport
CONFIG_VIRTIO_SERIAL=y  # virtio-serial-pci, virtconsole, virtserialport
CONFIG_HDA=y            # intel-hda, ich9-intel-hda, hda-duplex/-output/-micro
CONFIG_AC97=y           # AC97

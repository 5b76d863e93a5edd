//! The XML Ferric writes for libvirt (domains, disks, LVM pools) and the little it reads back
//! from a domain's XML (disk and interface targets, disk sources).

use super::{Accel, METADATA_NS};
use ferric_proto::plan::{GuestBoot, GuestSpec};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// Escapes text for an XML attribute or element.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// For each `<tag …>…</tag>` block of `xml`, the first attribute value that follows `prefix`
/// (e.g. `<target dev='` → `vda`).
fn block_values(xml: &str, tag: &str, prefix: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag} "), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let Some(len) = rest[start..].find(&close) else {
            break;
        };
        let block = &rest[start..start + len];
        if let Some(v) = block
            .split(prefix)
            .nth(1)
            .and_then(|t| t.split('\'').next())
        {
            out.push(v.to_owned());
        }
        rest = &rest[start + len..];
    }
    out
}

/// `dev='…'` of the `<target>` in each `<tag>` block (disks, interfaces).
pub(super) fn target_devs(xml: &str, tag: &str) -> Vec<String> {
    block_values(xml, tag, "<target dev='")
}

/// Sources of the `<disk>` elements: files (dir pools) and block devices (LVM pools).
pub(super) fn disk_sources(xml: &str) -> Vec<String> {
    let mut out = block_values(xml, "disk", "<source file='");
    out.extend(block_values(xml, "disk", "<source dev='"));
    out
}

/// A deterministic locally administered MAC for NIC `index` of `guest`.
pub fn default_mac(guest: &str, index: usize) -> String {
    let h = Sha256::digest(format!("{guest}/{index}").as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
}

/// Hash of a guest spec, stored in the domain's metadata.
pub fn spec_hash(spec: &GuestSpec, accel: Accel) -> String {
    let json = serde_json::to_vec(&(spec, accel.domain_type())).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..12])
}

/// The domain XML for a spec. `disks` are the volumes' (path, format) in order.
pub fn domain_xml(spec: &GuestSpec, accel: Accel, disks: &[(String, String)]) -> String {
    let mut x = String::new();
    let e = xml_escape;
    let _ = writeln!(x, "<domain type='{}'>", accel.domain_type());
    let _ = writeln!(x, "  <name>{}</name>", e(&spec.name));
    let _ = writeln!(
        x,
        "  <metadata><ferric:guest xmlns:ferric='{METADATA_NS}' spec='{}'/></metadata>",
        spec_hash(spec, accel)
    );
    let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", spec.memory_mib);
    let _ = writeln!(x, "  <vcpu>{}</vcpu>", spec.vcpus);
    let _ = writeln!(x, "  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>");
    match &spec.boot {
        GuestBoot::Disk => {
            let _ = writeln!(x, "    <boot dev='hd'/>");
        }
        GuestBoot::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            let _ = writeln!(x, "    <kernel>{}</kernel>", e(kernel));
            let _ = writeln!(x, "    <initrd>{}</initrd>", e(initrd));
            let _ = writeln!(x, "    <cmdline>{}</cmdline>", e(cmdline));
        }
    }
    let _ = writeln!(x, "  </os>");
    // QEMU 10 rejects the `-no-acpi` libvirt 9 passes without this.
    let _ = writeln!(x, "  <features><acpi/></features>");
    let _ = writeln!(
        x,
        "  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>"
    );
    let _ = writeln!(x, "  <devices>");
    for (i, (path, format)) in disks.iter().enumerate() {
        let dev = format!("vd{}", (b'a' + i as u8) as char);
        let _ = writeln!(x, "    {}", disk_xml(path, format, &dev));
    }
    for (i, nic) in spec.nics.iter().enumerate() {
        let mac = nic
            .mac
            .clone()
            .unwrap_or_else(|| default_mac(&spec.name, i));
        let _ = writeln!(
            x,
            "    <interface type='bridge'><source bridge='{}'/><mac address='{}'/><model type='virtio'/></interface>",
            e(&nic.bridge),
            e(&mac)
        );
    }
    match &spec.serial_log {
        Some(log) => {
            let _ = writeln!(
                x,
                "    <serial type='file'><source path='{}' append='on'/><target port='0'/></serial>",
                e(log)
            );
        }
        None => {
            let _ = writeln!(x, "    <serial type='pty'><target port='0'/></serial>");
        }
    }
    let _ = writeln!(x, "    <memballoon model='none'/>");
    let _ = writeln!(x, "  </devices>\n</domain>");
    x
}

/// The `<disk>…</disk>` element of `domain_xml` whose source is `path`, if any.
pub(super) fn disk_element<'a>(domain_xml: &'a str, path: &str) -> Option<&'a str> {
    let mut rest = domain_xml;
    while let Some(start) = rest.find("<disk ") {
        let end = rest[start..].find("</disk>")? + start + "</disk>".len();
        let el = &rest[start..end];
        let matches = |attr: &str| {
            el.contains(&format!("{attr}='{path}'")) || el.contains(&format!("{attr}=\"{path}\""))
        };
        // A file (dir pools) or a block device (LVM pools).
        if matches("file") || matches("dev") && el.contains("type='block'") {
            return Some(el);
        }
        rest = &rest[end..];
    }
    None
}

/// A guest disk: a block device (an LVM volume) or a file.
pub(super) fn disk_xml(path: &str, format: &str, dev: &str) -> String {
    let e = xml_escape;
    if path.starts_with("/dev/") {
        format!(
            "<disk type='block' device='disk'><driver name='qemu' type='raw' cache='none' io='native'/><source dev='{}'/><target dev='{}' bus='virtio'/></disk>",
            e(path),
            e(dev)
        )
    } else {
        format!(
            "<disk type='file' device='disk'><driver name='qemu' type='{}'/><source file='{}'/><target dev='{}' bus='virtio'/></disk>",
            e(format),
            e(path),
            e(dev)
        )
    }
}

/// Libvirt's definition of an LVM pool over an existing volume group.
pub fn lvm_pool_xml(name: &str, vg: &str) -> String {
    format!(
        "<pool type='logical'><name>{}</name><source><name>{}</name><format type='lvm2'/></source><target><path>/dev/{}</path></target></pool>",
        xml_escape(name),
        xml_escape(vg),
        xml_escape(vg)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_proto::plan::{GuestNic, VolumeRef};

    fn spec() -> GuestSpec {
        GuestSpec {
            name: "web-1".into(),
            vcpus: 2,
            memory_mib: 512,
            volumes: vec![VolumeRef {
                pool: "p".into(),
                name: "root".into(),
            }],
            nics: vec![GuestNic {
                bridge: "br0".into(),
                mac: None,
            }],
            boot: GuestBoot::Kernel {
                kernel: "/k".into(),
                initrd: "/i".into(),
                cmdline: "console=ttyS0 a<b".into(),
            },
            serial_log: Some("/var/log/g.log".into()),
        }
    }

    #[test]
    fn lvm_pools_and_block_disks_are_described_for_libvirt() {
        assert_eq!(
            lvm_pool_xml("fast", "vg0"),
            "<pool type='logical'><name>fast</name><source><name>vg0</name><format type='lvm2'/></source><target><path>/dev/vg0</path></target></pool>"
        );
        let block = disk_xml("/dev/vg0/web-root", "raw", "vda");
        assert!(block.starts_with("<disk type='block'"), "{block}");
        assert!(
            block.contains("<source dev='/dev/vg0/web-root'/>"),
            "{block}"
        );
        let file = disk_xml("/pools/a/web-root", "qcow2", "vdb");
        assert!(
            file.contains("type='qcow2'") && file.contains("<source file='/pools/a/web-root'/>")
        );
        // Detach finds either kind by its path.
        let dom = format!("<devices>{file}{block}</devices>");
        assert_eq!(
            disk_element(&dom, "/dev/vg0/web-root"),
            Some(block.as_str())
        );
        assert_eq!(disk_element(&dom, "/pools/a/web-root"), Some(file.as_str()));
    }

    #[test]
    fn domain_xml_carries_the_spec_and_escapes_text() {
        let x = domain_xml(
            &spec(),
            Accel::Tcg,
            &[("/pool/root".into(), "qcow2".into())],
        );
        assert!(x.starts_with("<domain type='qemu'>"));
        assert!(x.contains("<cmdline>console=ttyS0 a&lt;b</cmdline>"));
        assert!(x.contains("<source file='/pool/root'/><target dev='vda' bus='virtio'/>"));
        assert!(x.contains(&format!("<mac address='{}'/>", default_mac("web-1", 0))));
        assert!(x.contains(&format!("spec='{}'", spec_hash(&spec(), Accel::Tcg))));
        assert!(x.contains("<features><acpi/></features>"));
        assert_ne!(
            spec_hash(&spec(), Accel::Tcg),
            spec_hash(&spec(), Accel::Kvm)
        );
    }

    #[test]
    fn reads_target_devices_of_disks_and_interfaces() {
        let x = "<devices><disk type='file'><target dev='vda' bus='virtio'/></disk><disk type='file'><target dev='vdb' bus='virtio'/></disk><interface type='bridge'><mac address='52:54:00:00:00:01'/><target dev='vnet3'/></interface></devices>";
        assert_eq!(target_devs(x, "disk"), vec!["vda", "vdb"]);
        assert_eq!(target_devs(x, "interface"), vec!["vnet3"]);
        let y = "<disk type='file'><source file='/p/a'/></disk><disk type='file'><source file='/p/b'/></disk>";
        assert_eq!(disk_sources(y), vec!["/p/a", "/p/b"]);
    }

    #[test]
    fn finds_the_disk_element_of_a_path() {
        let x = "<domain><devices><disk type='file'><source file='/a'/></disk><disk type='file'><source file='/b'/><target dev='vdb'/></disk></devices></domain>";
        assert_eq!(
            disk_element(x, "/b"),
            Some("<disk type='file'><source file='/b'/><target dev='vdb'/></disk>")
        );
        assert_eq!(disk_element(x, "/c"), None);
    }

    #[test]
    fn default_macs_are_stable_unicast_and_distinct() {
        assert_eq!(default_mac("g", 0), default_mac("g", 0));
        assert_ne!(default_mac("g", 0), default_mac("g", 1));
        assert!(default_mac("g", 0).starts_with("52:54:00:"));
    }
}

//! Tier 4: in-band IPMI from inside a machine. A QEMU virtual node whose KCS interface is
//! wired to an emulated BMC (`ipmi_sim`, also reachable over IPMI-over-LAN) boots a kernel and
//! an initramfs holding `ferric-ramdisk`; what the ramdisk reads and sets through `/dev/ipmi0`
//! is checked with `ipmitool -I lanplus` against the same BMC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_tests::bmc::SimBmc;
use ferric_tests::node::{VirtualNode, node_image, wait_console};
use std::time::Duration;

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim())
        })
        .unwrap_or_else(|| panic!("no `{name}` in:\n{text}"))
}

#[test]
fn the_ramdisk_reads_and_sets_its_bmc_in_band_as_ipmitool_sees_it_over_lan() {
    let dir = tempfile::tempdir().unwrap();
    let bmc = SimBmc::start_with_vm(&dir.path().join("bmc")).unwrap();
    // The BMC's LAN identity, set over the LAN as an operator would.
    bmc.ipmitool(&["lan", "set", "1", "ipaddr", "10.20.30.40"])
        .unwrap();
    bmc.ipmitool(&["lan", "set", "1", "macaddr", "52:54:00:fe:11:22"])
        .unwrap();
    let image = node_image(
        "echo \"FERRIC-BMC-INFO $(ferric-ramdisk bmc info 2>&1)\"\n\
         echo \"FERRIC-BOOTDEV $(ferric-ramdisk bmc bootdev disk --persistent 2>&1)\"",
        &dir.path().join("initrd.cpio"),
    )
    .unwrap();
    let mut node = VirtualNode::boot(&image, &bmc, dir.path()).unwrap();

    let info = wait_console(&node.console, "FERRIC-BMC-INFO ", Duration::from_secs(240))
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nqemu: {}",
                std::fs::read_to_string(dir.path().join("qemu.log")).unwrap_or_default()
            )
        });
    let info: serde_json::Value =
        serde_json::from_str(&info).unwrap_or_else(|_| panic!("ferric-ramdisk said: {info}"));

    let mc = bmc.ipmitool(&["mc", "info"]).unwrap();
    assert_eq!(
        info["device"]["manufacturer"].to_string(),
        field(&mc, "Manufacturer ID"),
        "{info}"
    );
    assert_eq!(
        info["device"]["firmware"].as_str().unwrap(),
        field(&mc, "Firmware Revision")
    );
    let lan = bmc.ipmitool(&["lan", "print", "1"]).unwrap();
    assert_eq!(
        info["lan"]["ip"].as_str().unwrap(),
        field(&lan, "IP Address")
    );
    assert_eq!(info["lan"]["ip"], "10.20.30.40");
    assert_eq!(
        info["lan"]["mac"].as_str().unwrap(),
        field(&lan, "MAC Address")
    );
    assert_eq!(info["lan"]["mac"], "52:54:00:fe:11:22");
    assert_eq!(info["lan"]["channel"], 1);

    // The next boot device set in-band is what the BMC reports over the LAN.
    let set = wait_console(&node.console, "FERRIC-BOOTDEV ", Duration::from_secs(60)).unwrap();
    let set: serde_json::Value =
        serde_json::from_str(&set).unwrap_or_else(|_| panic!("ferric-ramdisk said: {set}"));
    assert_eq!(set["device"], "disk", "{set}");
    let shown = bmc.ipmitool(&["chassis", "bootparam", "get", "5"]).unwrap();
    assert!(
        shown.contains("Force Boot from default Hard-Drive"),
        "{shown}"
    );
    assert!(node.running());
}

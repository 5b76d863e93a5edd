use super::*;
use ferric_api::network::{Bond, Dns, Port, Route};

const A: &str = "52:54:00:00:00:0a";
const B: &str = "52:54:00:00:00:0b";

fn known() -> Vec<String> {
    vec![A.into(), B.into()]
}

/// One port with a static address and a VLAN, a default route, DNS.
fn static_net() -> NodeNetwork {
    NodeNetwork {
        ports: vec![Port {
            mac: "52-54-00-00-00-0A".into(),
            addresses: vec!["10.248.7.200/24".into(), "fd00:7::200/64".into()],
            vlans: vec![Vlan {
                id: 100,
                addresses: vec!["10.249.7.10/24".into()],
            }],
            ..Port::default()
        }],
        routes: vec![Route {
            to: "default".into(),
            via: "10.248.7.1".into(),
        }],
        dns: Dns {
            servers: vec!["10.248.7.1".into()],
            search: vec!["lab.example".into()],
        },
        ..NodeNetwork::default()
    }
}

#[test]
fn a_network_is_checked_against_the_nodes_nics_and_each_refusal_says_why() {
    let ok = check_network(&static_net(), &known()).unwrap();
    assert_eq!(ok.ports[0].mac, A, "MACs in canonical spelling");
    let refused = |net: NodeNetwork, known: &[String]| check_network(&net, known).unwrap_err();
    let mut n = static_net();
    n.ports[0].mac = "52:54:00:00:00:99".into();
    let e = refused(n.clone(), &known());
    assert!(
        e.contains("not one of the node's NICs") && e.contains(A),
        "{e}"
    );
    assert!(refused(n, &[]).contains("no known NIC yet"));
    let mut n = static_net();
    n.ports[0].vlans[0].id = 4095;
    assert!(refused(n, &known()).contains("VLAN 4095 is not 1 to 4094"));
    let mut n = static_net();
    n.routes[0].via = "192.0.2.1".into();
    assert!(refused(n, &known()).contains("no address of the node is in a network with"));
    let mut n = static_net();
    n.ports[0].addresses.push("10.248.7.300/24".into());
    assert!(refused(n, &known()).contains("not an IP address"));
    let mut n = static_net();
    n.ports[0].bond = Some("bond0".into());
    assert!(refused(n.clone(), &known()).contains("no bond `bond0` is declared"));
    n.bonds.push(Bond {
        name: "bond0".into(),
        mode: "active-backup".into(),
        ..Bond::default()
    });
    assert!(refused(n, &known()).contains("its addresses and VLANs go on the bond"));
    let mut n = static_net();
    n.bonds.push(Bond {
        name: "bond0".into(),
        mode: "fastest".into(),
        ..Bond::default()
    });
    assert!(refused(n, &known()).contains("mode `fastest`"));
}

#[test]
fn network_config_v2_matches_ports_by_mac_with_addresses_vlans_routes_and_dns() {
    let net = check_network(&static_net(), &known()).unwrap();
    let v = network_config_v2(&net);
    assert_eq!(v["version"], 2);
    let p = &v["ethernets"]["port0"];
    assert_eq!(p["match"]["macaddress"], A);
    assert_eq!(p["dhcp4"], false);
    assert_eq!(p["addresses"], json!(["10.248.7.200/24", "fd00:7::200/64"]));
    assert_eq!(
        p["routes"],
        json!([{ "to": "0.0.0.0/0", "via": "10.248.7.1" }])
    );
    assert_eq!(p["nameservers"]["addresses"], json!(["10.248.7.1"]));
    assert_eq!(p["nameservers"]["search"], json!(["lab.example"]));
    let vl = &v["vlans"]["port0.100"];
    assert_eq!(
        (vl["id"].clone(), vl["link"].clone()),
        (json!(100), json!("port0"))
    );
    assert_eq!(vl["addresses"], json!(["10.249.7.10/24"]));
    assert!(
        vl.get("routes").is_none(),
        "the gateway is not on the VLAN's network"
    );
}

fn bonded() -> NodeNetwork {
    NodeNetwork {
        ports: vec![
            Port {
                mac: A.into(),
                bond: Some("bond0".into()),
                ..Port::default()
            },
            Port {
                mac: B.into(),
                bond: Some("bond0".into()),
                ..Port::default()
            },
        ],
        bonds: vec![Bond {
            name: "bond0".into(),
            mode: "802.3ad".into(),
            addresses: vec!["192.0.2.5/24".into()],
            vlans: vec![Vlan {
                id: 20,
                addresses: vec![],
            }],
            mtu: Some(9000),
        }],
        routes: vec![Route {
            to: "198.51.100.0/24".into(),
            via: "192.0.2.254".into(),
        }],
        dns: Dns::default(),
    }
}

#[test]
fn bonds_take_their_members_and_a_vlan_without_addresses_asks_dhcp() {
    let net = check_network(&bonded(), &known()).unwrap();
    let v = network_config_v2(&net);
    for m in ["port0", "port1"] {
        assert_eq!(v["ethernets"][m]["dhcp4"], false, "{m} is the bond's");
        assert!(v["ethernets"][m].get("addresses").is_none());
    }
    let b = &v["bonds"]["bond0"];
    assert_eq!(b["interfaces"], json!(["port0", "port1"]));
    assert_eq!(b["parameters"]["mode"], "802.3ad");
    assert_eq!(b["mtu"], 9000);
    assert_eq!(
        b["routes"],
        json!([{ "to": "198.51.100.0/24", "via": "192.0.2.254" }])
    );
    assert_eq!(v["vlans"]["bond0.20"]["dhcp4"], true);
    assert_eq!(v["vlans"]["bond0.20"]["link"], "bond0");
    // The same network in OpenStack's words.
    let d = network_data(&net);
    let links = d["links"].as_array().unwrap();
    assert_eq!(links.len(), 4);
    assert_eq!(links[2]["type"], "bond");
    assert_eq!(links[2]["bond_links"], json!(["port0", "port1"]));
    assert_eq!(links[2]["ethernet_mac_address"], A);
    assert_eq!(links[3]["type"], "vlan");
    assert_eq!(links[3]["vlan_id"], 20);
    let nets = d["networks"].as_array().unwrap();
    assert_eq!(nets[0]["link"], "bond0");
    assert_eq!(
        (nets[0]["ip_address"].clone(), nets[0]["netmask"].clone()),
        (json!("192.0.2.5"), json!("255.255.255.0"))
    );
    assert_eq!(
        nets[0]["routes"],
        json!([{ "network": "198.51.100.0", "netmask": "255.255.255.0", "gateway": "192.0.2.254" }])
    );
    assert_eq!(nets[1]["type"], "ipv4_dhcp");
}

#[test]
fn network_data_json_has_ipv4_and_ipv6_networks_with_the_default_route_and_dns() {
    let net = check_network(&static_net(), &known()).unwrap();
    let d = network_data(&net);
    let nets = d["networks"].as_array().unwrap();
    assert_eq!(nets[0]["type"], "ipv4");
    assert_eq!(
        nets[0]["routes"],
        json!([{ "network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.248.7.1" }])
    );
    assert_eq!(nets[1]["type"], "ipv6");
    assert_eq!(nets[1]["netmask"], "ffff:ffff:ffff:ffff::");
    assert_eq!(nets[1]["routes"], json!([]));
    assert_eq!(nets[2]["link"], "port0.100");
    assert_eq!(
        d["services"],
        json!([{ "type": "dns", "address": "10.248.7.1" }])
    );
}

#[test]
fn a_drive_says_the_host_keys_user_data_and_network_in_either_layout() {
    let net = check_network(&static_net(), &known()).unwrap();
    let inst = InstanceConfig {
        hostname: Some("web-1".into()),
        ssh_keys: vec!["ssh-ed25519 AAAA me@x\n".into()],
        user_data: Some("#!/bin/sh\necho hi\n".into()),
        format: ConfigDriveFormat::NoCloud,
    };
    let d = build("n1", &inst, &net, 42).unwrap();
    assert_eq!(d.label, "cidata");
    let get = |d: &ConfigDrive, p: &str| {
        d.files
            .iter()
            .find(|f| f.path == p)
            .unwrap_or_else(|| panic!("no {p}"))
            .content
            .clone()
    };
    let meta: Value = serde_json::from_str(&get(&d, "meta-data")).unwrap();
    assert_eq!(meta["instance-id"], "n1-42");
    assert_eq!(meta["local-hostname"], "web-1");
    assert_eq!(meta["public-keys"], json!(["ssh-ed25519 AAAA me@x"]));
    assert_eq!(get(&d, "user-data"), "#!/bin/sh\necho hi\n");
    let nc: Value = serde_json::from_str(&get(&d, "network-config")).unwrap();
    assert_eq!(nc, network_config_v2(&net));
    let c2 = build(
        "n1",
        &InstanceConfig {
            format: ConfigDriveFormat::Config2,
            ..inst.clone()
        },
        &net,
        42,
    )
    .unwrap();
    assert_eq!(c2.label, "config-2");
    let meta: Value = serde_json::from_str(&get(&c2, "openstack/latest/meta_data.json")).unwrap();
    assert_eq!(meta["hostname"], "web-1");
    assert_eq!(meta["public_keys"]["key-0"], "ssh-ed25519 AAAA me@x");
    let nd: Value = serde_json::from_str(&get(&c2, "openstack/latest/network_data.json")).unwrap();
    assert_eq!(nd, network_data(&net));
    // Without ports there is no network file: the image's own default (DHCP) holds.
    let plain = build("n1", &InstanceConfig::default(), &NodeNetwork::default(), 1).unwrap();
    assert_eq!(
        plain
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>(),
        ["meta-data", "user-data"]
    );
    assert!(get(&plain, "meta-data").contains("\"local-hostname\": \"n1\""));
}

#[test]
fn user_data_over_the_limit_and_bad_names_are_refused_naming_the_limit() {
    let big = InstanceConfig {
        user_data: Some("x".repeat(USER_DATA_MAX + 1)),
        ..InstanceConfig::default()
    };
    let e = build("n1", &big, &NodeNetwork::default(), 1).unwrap_err();
    assert!(matches!(e, DriveError::UserDataTooLarge(n) if n == USER_DATA_MAX + 1));
    assert!(e.to_string().contains("at most 65536 (64 KiB)"), "{e}");
    let exactly = InstanceConfig {
        user_data: Some("x".repeat(USER_DATA_MAX)),
        ..InstanceConfig::default()
    };
    assert!(build("n1", &exactly, &NodeNetwork::default(), 1).is_ok());
    let bad = InstanceConfig {
        hostname: Some("-web".into()),
        ..InstanceConfig::default()
    };
    assert!(
        build("n1", &bad, &NodeNetwork::default(), 1)
            .unwrap_err()
            .to_string()
            .contains("not a DNS name")
    );
}

#[test]
fn cidrs_know_their_networks() {
    let c = Cidr::parse("10.0.0.5/24").unwrap();
    assert!(c.contains("10.0.0.1".parse().unwrap()));
    assert!(!c.contains("10.0.1.1".parse().unwrap()));
    assert!(!c.contains("::1".parse().unwrap()));
    assert_eq!(
        Cidr::parse("fd00::5/64").unwrap().netmask(),
        "ffff:ffff:ffff:ffff::"
    );
    assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().netmask(), "0.0.0.0");
    assert!(Cidr::parse("10.0.0.5").is_err());
    assert!(Cidr::parse("10.0.0.5/33").is_err());
}

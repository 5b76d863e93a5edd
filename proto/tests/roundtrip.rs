//! Property tests: every message survives the framing unchanged, and arbitrary bytes never
//! panic a decoder.
#![allow(clippy::unwrap_used)]

use ferric_proto::frame::{DEFAULT_MAX_FRAME, FrameDecoder, decode_payload, to_datagram, to_frame};
use ferric_proto::msg::{
    AgentMsg, CoordMsg, EnrollRequest, EnrollResponse, Hello, PlanCursor, Role, TelemetrySample,
};
use ferric_proto::plan::{
    ErrorKind, GuestBoot, GuestNic, GuestSpec, Plan, PlanStep, PowerAction, SelEntry, Step,
    StepEvent, StepEventKind, StepOutput, VolumeFormat, VolumeImage, VolumeRef,
};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9_.-]{1,12}"
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (
            name(),
            proptest::option::of(name()),
            proptest::option::of(any::<u16>())
        )
            .prop_map(|(name, uplink, vlan)| Step::EnsureBridge { name, uplink, vlan }),
        (
            name(),
            name(),
            any::<u64>(),
            any::<bool>(),
            proptest::option::of((name(), "[0-9a-f]{64}"))
        )
            .prop_map(|(pool, name, size_bytes, raw, image)| {
                Step::EnsureVolume {
                    pool,
                    name,
                    size_bytes,
                    format: if raw {
                        VolumeFormat::Raw
                    } else {
                        VolumeFormat::Qcow2
                    },
                    image: image.map(|(host, hex)| VolumeImage {
                        url: format!("http://{host}/images/sha256/{hex}"),
                        checksum: format!("sha256:{hex}"),
                        format: raw.then(|| "qcow2".to_owned()),
                    }),
                }
            }),
        (
            name(),
            1u32..64,
            1u64..1 << 20,
            proptest::collection::vec((name(), name()), 0..3),
            proptest::option::of(name())
        )
            .prop_map(|(name, vcpus, memory_mib, vols, kernel)| {
                Step::EnsureGuest(GuestSpec {
                    name,
                    vcpus,
                    memory_mib,
                    volumes: vols
                        .iter()
                        .map(|(pool, name)| VolumeRef {
                            pool: pool.clone(),
                            name: name.clone(),
                        })
                        .collect(),
                    nics: vols
                        .into_iter()
                        .map(|(bridge, _)| GuestNic { bridge, mac: None })
                        .collect(),
                    boot: match kernel {
                        Some(k) => GuestBoot::Kernel {
                            kernel: format!("/k/{k}"),
                            initrd: format!("/i/{k}"),
                            cmdline: "console=ttyS0".into(),
                        },
                        None => GuestBoot::Disk,
                    },
                    serial_log: None,
                })
            }),
        (name(), name(), name()).prop_map(|(guest, pool, volume)| Step::AttachVolume {
            guest,
            pool,
            volume,
            target: "vdb".into()
        }),
        name().prop_map(|bmc| Step::BmcPower {
            bmc,
            action: PowerAction::Cycle
        }),
        (name(), any::<bool>()).prop_map(|(bmc, clear)| Step::BmcSel { bmc, clear }),
        name().prop_map(|bmc| Step::BmcInventory { bmc }),
        (name(), proptest::option::of(name())).prop_map(|(bmc, image)| Step::BmcMedia {
            bmc,
            image: image.map(|i| format!("https://images.example/{i}.iso")),
        }),
    ]
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        any::<u64>(),
        name(),
        proptest::collection::vec((name(), any::<u32>(), step()), 0..8),
    )
        .prop_map(|(id, node, steps)| Plan {
            id,
            node,
            steps: steps
                .into_iter()
                .map(|(key, timeout_secs, step)| PlanStep {
                    key,
                    timeout_secs,
                    step,
                })
                .collect(),
        })
}

fn event_kind() -> impl Strategy<Value = StepEventKind> {
    prop_oneof![
        Just(StepEventKind::Started),
        (any::<u64>(), proptest::option::of(any::<u64>()))
            .prop_map(|(done, total)| StepEventKind::Progress { done, total }),
        any::<bool>().prop_map(|changed| StepEventKind::Done { changed }),
        ".{0,40}".prop_map(|message| StepEventKind::Failed {
            kind: ErrorKind::Unreachable,
            message
        }),
        proptest::collection::vec(
            (
                any::<u16>(),
                proptest::option::of(any::<u32>()),
                name(),
                any::<u8>(),
                ".{0,40}",
                any::<bool>(),
                "[0-9a-f]{32}"
            ),
            0..4
        )
        .prop_map(|entries| StepEventKind::Output(StepOutput::Sel(
            entries
                .into_iter()
                .map(
                    |(id, at_s, sensor, sensor_number, event, asserted, raw)| SelEntry {
                        id,
                        at_s,
                        sensor,
                        sensor_number,
                        event,
                        asserted,
                        raw
                    }
                )
                .collect()
        ))),
    ]
}

fn event() -> impl Strategy<Value = StepEvent> {
    (
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        event_kind(),
    )
        .prop_map(|(plan, seq, step, at_ms, kind)| StepEvent {
            plan,
            seq,
            step,
            at_ms,
            kind,
        })
}

fn agent_msg() -> impl Strategy<Value = AgentMsg> {
    prop_oneof![
        (
            any::<u16>(),
            name(),
            any::<[u8; 32]>(),
            proptest::collection::vec((any::<u64>(), any::<u32>(), any::<bool>()), 0..4)
        )
            .prop_map(
                |(version, node, inventory_digest, plans)| AgentMsg::Hello(Hello {
                    version,
                    node,
                    role: Role::Management,
                    capabilities: vec!["fake".into()],
                    inventory_digest,
                    plans: plans
                        .into_iter()
                        .map(|(plan, next_seq, finished)| PlanCursor {
                            plan,
                            next_seq,
                            finished
                        })
                        .collect(),
                })
            ),
        any::<u64>().prop_map(|plan| AgentMsg::PlanAccepted { plan }),
        event().prop_map(AgentMsg::Event),
    ]
}

fn coord_msg() -> impl Strategy<Value = CoordMsg> {
    prop_oneof![
        plan().prop_map(CoordMsg::Plan),
        (any::<u64>(), any::<u32>()).prop_map(|(plan, seq)| CoordMsg::Ack { plan, seq }),
    ]
}

proptest! {
    #[test]
    fn agent_messages_roundtrip(msgs in proptest::collection::vec(agent_msg(), 1..6), chunk in 1usize..64) {
        let mut bytes = Vec::new();
        for m in &msgs {
            bytes.extend(to_frame(m, DEFAULT_MAX_FRAME).unwrap());
        }
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut got = Vec::new();
        for c in bytes.chunks(chunk) {
            dec.extend(c);
            while let Some(m) = dec.next_msg::<AgentMsg>().unwrap() {
                got.push(m);
            }
        }
        prop_assert_eq!(got, msgs);
        prop_assert!(dec.finish().is_ok());
    }

    #[test]
    fn coordinator_messages_roundtrip(msg in coord_msg()) {
        let frame = to_frame(&msg, DEFAULT_MAX_FRAME).unwrap();
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        dec.extend(&frame);
        prop_assert_eq!(dec.next_msg::<CoordMsg>().unwrap(), Some(msg));
    }

    #[test]
    fn telemetry_datagram_roundtrip(seq in any::<u64>(), cpu in 0f32..100.0, mem in any::<u64>()) {
        let s = TelemetrySample {
            seq, at_ms: 5, cpu_percent: cpu, cpus: 2, mem_used_bytes: mem, mem_total_bytes: mem,
            load1: 0.5, disks: vec![], nics: vec![], progress: None, guests: vec![],
        };
        let d = to_datagram(&s).unwrap();
        prop_assert_eq!(decode_payload::<TelemetrySample>(&d).unwrap(), s);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut dec = FrameDecoder::new(256);
        dec.extend(&bytes);
        for _ in 0..8 {
            match dec.next_msg::<AgentMsg>() {
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
        let _ = decode_payload::<CoordMsg>(&bytes);
        let _ = decode_payload::<TelemetrySample>(&bytes);
        let _ = decode_payload::<EnrollRequest>(&bytes);
        let _ = decode_payload::<EnrollResponse>(&bytes);
    }
}

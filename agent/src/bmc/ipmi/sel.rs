//! System Event Log entries: the 16 bytes a BMC stores per entry, decoded for the SEL step's
//! output.

/// Decodes a System Event Log entry as the BMC stored it (16 bytes, untrusted): record
/// types, sensor types and event codes through ipmi-rs's tables; what they do not know is
/// named by its codes, never refused.
pub fn decode_sel(raw: &[u8; 16]) -> ferric_proto::plan::SelEntry {
    use ipmi_rs::storage::sdr::SensorType;
    use ipmi_rs::storage::sel::{Entry, EventDirection};
    struct Describe<'a>(&'a Entry);
    impl std::fmt::Display for Describe<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.event_description(f)
        }
    }
    let id = u16::from_le_bytes([raw[0], raw[1]]);
    let ts = u32::from_le_bytes([raw[3], raw[4], raw[5], raw[6]]);
    // Times up to 0x20000000 count from the BMC's initialisation, not from 1970.
    // 0xFFFFFFFF is "unspecified".
    let at_s = (ts > 0x2000_0000 && ts != u32::MAX).then_some(ts);
    let mut e = ferric_proto::plan::SelEntry {
        id,
        at_s: None,
        sensor: String::new(),
        sensor_number: 0,
        event: String::new(),
        asserted: true,
        raw: raw.iter().map(|b| format!("{b:02x}")).collect(),
    };
    match Entry::parse(raw) {
        Ok(
            ref entry @ Entry::System {
                sensor_type,
                sensor_number,
                event_direction,
                event_type,
                ref event_data,
                ..
            },
        ) => {
            let desc = Describe(entry).to_string();
            e.at_s = at_s;
            e.sensor = SensorType::from(sensor_type).to_string();
            e.sensor_number = sensor_number;
            e.event = if desc.is_empty() {
                format!("event type 0x{event_type:02x} offset {}", event_data.offset)
            } else {
                desc
            };
            e.asserted = event_direction == EventDirection::Assert;
        }
        Ok(Entry::OemTimestamped {
            ty,
            manufacturer_id,
            ..
        }) => {
            e.at_s = at_s;
            e.sensor = format!("OEM record 0x{ty:02x}");
            e.event = format!("OEM data (manufacturer {manufacturer_id})");
        }
        Ok(Entry::OemNotTimestamped { ty, .. }) => {
            e.sensor = format!("OEM record 0x{ty:02x}");
            e.event = "OEM data".into();
        }
        Err(err) => {
            e.sensor = format!("record type 0x{:02x}", raw[2]);
            e.event = format!("not decoded ({err:?})");
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::decode_sel;

    #[test]
    fn sel_entries_decode_with_their_codes_where_no_table_names_them() {
        // Temperature sensor 1, threshold event "upper critical going high", asserted, logged
        // at 2026-12-02 (a real time stamp).
        let at: u32 = 1_796_234_995;
        let mut raw = [1, 0, 2, 0, 0, 0, 0, 0x20, 0, 4, 1, 1, 1, 0x59, 0x5a, 0x50];
        raw[3..7].copy_from_slice(&at.to_le_bytes());
        let e = decode_sel(&raw);
        assert_eq!(
            (
                e.id,
                e.at_s,
                e.sensor.as_str(),
                e.sensor_number,
                e.event.as_str(),
                e.asserted
            ),
            (
                1,
                Some(at),
                "Temperature",
                1,
                "Upper Critical - going high",
                true
            )
        );
        assert_eq!(e.raw, "010002f35e106b200004010101595a50");
        // A time stamp counted from the BMC's start is no date; a deassertion; a sensor-specific
        // offset the tables know (processor thermal trip).
        let e = decode_sel(&[
            2, 0, 2, 0x10, 0, 0, 0, 0x20, 0, 4, 7, 2, 0xef, 1, 0xff, 0xff,
        ]);
        assert_eq!(
            (e.at_s, e.sensor.as_str(), e.event.as_str(), e.asserted),
            (None, "Processor", "Thermal Trip", false)
        );
        // A temperature sensor has no sensor-specific offsets: named by its codes.
        let e = decode_sel(&[3, 0, 2, 0, 0, 0, 0, 0x20, 0, 4, 1, 1, 0x6f, 1, 0xff, 0xff]);
        assert_eq!(e.event, "event type 0x6f offset 1");
        // OEM records and unknown record types are named, not refused.
        let e = decode_sel(&[4, 0, 0xc1, 0, 0, 0, 0x60, 0x57, 0x01, 0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(e.sensor, "OEM record 0xc1");
        assert!(e.event.contains("manufacturer 343"), "{}", e.event);
        let e = decode_sel(&[5, 0, 0xe0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
        assert_eq!((e.sensor.as_str(), e.at_s), ("OEM record 0xe0", None));
        let e = decode_sel(&[6, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(e.sensor, "record type 0x10");
        assert!(e.event.starts_with("not decoded"), "{}", e.event);
    }

    #[cfg(feature = "agent")]
    #[test]
    fn the_fake_drivers_event_log_entry_is_what_the_decoder_makes_of_its_bytes() {
        let fake = crate::driver::fake_sel_entry();
        let mut raw = [0u8; 16];
        hex::decode_to_slice(&fake.raw, &mut raw).unwrap();
        assert_eq!(decode_sel(&raw), fake);
    }
}

//! Sensor Data Records: which sensors a BMC has, and how to convert their readings.

/// A sensor found in the BMC's SDR repository, with what is needed to read and convert it.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorDef {
    /// Sensor number.
    pub number: u8,
    /// Name from the record's ID string.
    pub name: String,
    /// Sensor type (`temperature`, `fan`, …).
    pub kind: String,
    /// Unit (`°C`, `RPM`, …), empty when unspecified.
    pub unit: String,
    /// Linear conversion of a raw reading, for analog (full record) sensors.
    pub conversion: Option<Conversion>,
}

/// `y = (M·x + B·10^Bexp)·10^Rexp` (IPMI 2.0, 36.3), for linear sensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conversion {
    m: f64,
    b: f64,
    b_exp: i32,
    r_exp: i32,
    signed: Option<bool>,
}

impl Conversion {
    /// The reading a raw byte stands for.
    pub fn apply(&self, raw: u8) -> f64 {
        let x = match self.signed {
            Some(true) => f64::from(raw as i8),
            Some(false) => f64::from(!raw as i8),
            None => f64::from(raw),
        };
        (self.m * x + self.b * 10f64.powi(self.b_exp)) * 10f64.powi(self.r_exp)
    }
}

/// Why a Sensor Data Record was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdrError {
    /// A sensor record shorter than the fixed part of its type (IPMI 2.0 tables 43-1, 43-2).
    #[error("SDR of {len} bytes is too short")]
    TooShort {
        /// The record's length, header included.
        len: usize,
    },
    /// A compact sensor record whose ID string modifier type is reserved (10b or 11b).
    #[error("compact SDR with a reserved ID string modifier")]
    ReservedIdModifier,
    /// `ipmi-rs`' parser panicked on the record (the panic was contained).
    #[error("the SDR parser rejected the record")]
    ParserPanicked,
    /// `ipmi-rs`' parser refused the record.
    #[error("malformed SDR: {detail}")]
    Malformed {
        /// `ipmi-rs`' error, as it renders it (it has no `Display`).
        detail: String,
    },
}

/// Parses one SDR (header and body, as Get SDR returns them) into a sensor Ferric can read:
/// full and compact sensor records owned by the BMC; other records give `Ok(None)`. The bytes
/// come from the network: a record the parser cannot take is an error, never a panic.
pub fn parse_sdr(record: &[u8]) -> Result<Option<SensorDef>, SdrError> {
    use ipmi_rs::storage::sdr::record::{
        DataFormat, Linearization, Record, WithSensorRecordCommon,
    };
    // ipmi-rs 0.6 indexes past the end of short sensor records: refuse those first (the fixed
    // parts are 43 and 27 bytes, IPMI 2.0 tables 43-1 and 43-2), and contain any other panic.
    // Only sensor records are parsed (other kinds are not needed, and ipmi-rs panics on
    // some of them).
    let min_body = match record.get(3) {
        Some(0x01) => 43,
        Some(0x02) => 27,
        _ => return Ok(None),
    };
    if record.len() < 5 + min_body {
        return Err(SdrError::TooShort { len: record.len() });
    }
    // Compact records: ID-string modifier types 10b and 11b are reserved (and make ipmi-rs
    // panic).
    if record.get(3) == Some(&0x02) && record[5 + 18] & 0x20 != 0 {
        return Err(SdrError::ReservedIdModifier);
    }
    let parsed = crate::bmc::contained(|| Record::parse(record))
        .map_err(|_| SdrError::ParserPanicked)?
        .map_err(|e| SdrError::Malformed {
            detail: format!("{e:?}"),
        })?;
    let (common, conversion) = match (parsed.full_sensor(), parsed.compact_sensor()) {
        (Some(full), _) => {
            let conv = matches!(full.linearization, Linearization::Linear)
                .then_some(())
                .and_then(|()| {
                    Some(Conversion {
                        m: f64::from(full.m),
                        b: f64::from(full.b),
                        b_exp: i32::from(full.b_exponent),
                        r_exp: i32::from(full.result_exponent),
                        signed: match full.analog_data_format? {
                            DataFormat::Unsigned => None,
                            DataFormat::TwosComplement => Some(true),
                            DataFormat::OnesComplement => Some(false),
                        },
                    })
                });
            (full.common().clone(), conv)
        }
        (None, Some(compact)) => (compact.common().clone(), None),
        _ => return Ok(None),
    };
    // Sensors owned by another controller need bridged requests (not supported yet).
    if u8::from(common.key.owner_id) != 0x20 {
        return Ok(None);
    }
    let unit = if common.sensor_units.is_percentage {
        "%".to_owned()
    } else {
        // ipmi-rs renders units only next to a value ("1.00 °C"): keep the unit part.
        let shown = common.sensor_units.base_unit.display(true, 1.0f32);
        match shown.split_once(' ') {
            Some((_, u)) if u != "Unspecified" => u.to_owned(),
            _ => String::new(),
        }
    };
    Ok(Some(SensorDef {
        number: common.key.sensor_number.get(),
        name: common.sensor_id.to_string().trim().to_owned(),
        kind: common.ty.to_string().to_lowercase(),
        unit,
        conversion,
    }))
}

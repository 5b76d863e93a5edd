//! Where BMCs differ, as data. The client reads the service root once per BMC, finds the row
//! for its vendor, and searches in the row's order; anything not in the table is found by the
//! generic order, which follows the Redfish schema's links.
//!
//! | vendor            | virtual media under   | event log (LogService ids, in order)    |
//! |-------------------|-----------------------|-----------------------------------------|
//! | Dell iDRAC        | Managers, then Systems| Managers: `Sel`, `Lclog`                |
//! | HPE iLO           | Managers              | Systems: `IML`; Managers: `IEL`         |
//! | Lenovo XClarity   | Managers              | Systems: `ActiveLog`, `PlatformLog`     |
//! | Supermicro        | Managers              | Systems: `Log1`                         |
//! | OpenBMC (bmcweb)  | Managers              | Systems: `EventLog`                     |
//! | Ferric's lab      | Systems               | Managers: `Sel`                         |
//! | anything else     | Systems, then Managers| any, `Sel`/`SEL`/`EventLog` first       |
//!
//! sushy-tools' emulator falls in the last row: its virtual media is the system's, linked
//! from its manager.
//!
//! Reset types differ too: not every BMC offers `PowerCycle` or `ForceRestart`; the client
//! reads the system's allowed values (`ResetType@Redfish.AllowableValues`, or the action's
//! `@Redfish.ActionInfo`) and falls back as [`reset_for`] says. Virtual media is inserted with
//! the `InsertMedia` action where the resource has one and with a PATCH of `Image` where it
//! does not (older firmware). Long actions may answer 202 with a task monitor, which is
//! followed to a deadline.

use serde_json::Value;

/// Where a resource collection is looked for first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Under {
    /// The manager (the BMC) the system is managed by.
    Managers,
    /// The computer system itself.
    Systems,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quirks {
    /// Vendor name, for logs.
    pub vendor: &'static str,
    /// Where to look for virtual media, in order.
    pub virtual_media: &'static [Under],
    /// Where to look for the event log, in order.
    pub logs: &'static [Under],
    /// LogService ids tried first, in order.
    pub log_ids: &'static [&'static str],
}

const GENERIC: Quirks = Quirks {
    vendor: "generic",
    virtual_media: &[Under::Systems, Under::Managers],
    logs: &[Under::Systems, Under::Managers],
    log_ids: &["Sel", "SEL", "EventLog", "Log1"],
};

/// The table (first match on the service root wins).
const ROWS: &[(&str, Quirks)] = &[
    (
        "Dell",
        Quirks {
            vendor: "Dell iDRAC",
            virtual_media: &[Under::Managers, Under::Systems],
            logs: &[Under::Managers],
            log_ids: &["Sel", "Lclog"],
        },
    ),
    (
        "HPE",
        Quirks {
            vendor: "HPE iLO",
            virtual_media: &[Under::Managers],
            logs: &[Under::Systems, Under::Managers],
            log_ids: &["IML", "IEL"],
        },
    ),
    (
        "Lenovo",
        Quirks {
            vendor: "Lenovo XClarity",
            virtual_media: &[Under::Managers],
            logs: &[Under::Systems],
            log_ids: &["ActiveLog", "PlatformLog"],
        },
    ),
    (
        "Supermicro",
        Quirks {
            vendor: "Supermicro",
            virtual_media: &[Under::Managers],
            logs: &[Under::Systems],
            log_ids: &["Log1"],
        },
    ),
    (
        "OpenBMC",
        Quirks {
            vendor: "OpenBMC",
            virtual_media: &[Under::Managers],
            logs: &[Under::Systems],
            log_ids: &["EventLog"],
        },
    ),
    (
        "Ferric",
        Quirks {
            vendor: "Ferric lab",
            virtual_media: &[Under::Systems, Under::Managers],
            logs: &[Under::Managers, Under::Systems],
            log_ids: &["Sel"],
        },
    ),
];

/// The row for a service root: its `Vendor` (Redfish 1.5 and later), else the first OEM
/// section's name (`Oem.Dell`, `Oem.Hpe`/`Oem.Hp`, `Oem.Lenovo`, `Oem.Supermicro`), else the
/// `Product`.
pub fn quirks(root: &Value) -> Quirks {
    let mut names: Vec<String> = Vec::new();
    if let Some(v) = root.get("Vendor").and_then(Value::as_str) {
        names.push(v.to_owned());
    }
    if let Some(oem) = root.get("Oem").and_then(Value::as_object) {
        names.extend(oem.keys().cloned());
    }
    if let Some(p) = root.get("Product").and_then(Value::as_str) {
        names.push(p.to_owned());
    }
    for n in &names {
        let n = n.to_ascii_lowercase();
        let n = if n == "hp" { "hpe".to_owned() } else { n };
        for (key, row) in ROWS {
            if n.contains(&key.to_ascii_lowercase()) {
                return *row;
            }
        }
    }
    GENERIC
}

/// A Redfish reset type for a power action, given what the system allows (`None`: it does not
/// say, and the standard names are used). The second value is true when the action has no
/// reset type of its own here and is done as `ForceOff` then `On`.
pub fn reset_for(action: &str, allowed: Option<&[String]>) -> Option<(&'static str, bool)> {
    let has = |t: &str| allowed.is_none_or(|a| a.iter().any(|x| x == t));
    let pick = |list: &[&'static str]| list.iter().copied().find(|t| has(t));
    match action {
        "on" => pick(&["On", "ForceOn"]).map(|t| (t, false)),
        "off" => pick(&["ForceOff"]).map(|t| (t, false)),
        "soft" => pick(&["GracefulShutdown"]).map(|t| (t, false)),
        "reset" => pick(&["ForceRestart", "GracefulRestart"])
            .map(|t| (t, false))
            .or_else(|| (has("ForceOff") && has("On")).then_some(("ForceOff", true))),
        "cycle" => pick(&["PowerCycle", "ForceRestart"])
            .map(|t| (t, false))
            .or_else(|| (has("ForceOff") && has("On")).then_some(("ForceOff", true))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_are_found_by_vendor_oem_or_product() {
        assert_eq!(quirks(&json!({"Vendor": "Dell"})).vendor, "Dell iDRAC");
        assert_eq!(quirks(&json!({"Oem": {"Hpe": {}}})).vendor, "HPE iLO");
        assert_eq!(quirks(&json!({"Oem": {"Hp": {}}})).vendor, "HPE iLO");
        assert_eq!(
            quirks(&json!({"Product": "OpenBMC bmcweb"})).vendor,
            "OpenBMC"
        );
        assert_eq!(quirks(&json!({"Product": "x"})).vendor, "generic");
    }

    #[test]
    fn reset_types_fall_back_to_what_the_system_allows() {
        assert_eq!(reset_for("cycle", None), Some(("PowerCycle", false)));
        let dell: Vec<String> = ["On", "ForceOff", "ForceRestart", "GracefulShutdown"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            reset_for("cycle", Some(&dell)),
            Some(("ForceRestart", false))
        );
        let bare: Vec<String> = ["On", "ForceOff"].map(String::from).to_vec();
        assert_eq!(reset_for("cycle", Some(&bare)), Some(("ForceOff", true)));
        assert_eq!(reset_for("soft", Some(&bare)), None);
        let force_on: Vec<String> = ["ForceOn", "ForceOff"].map(String::from).to_vec();
        assert_eq!(reset_for("on", Some(&force_on)), Some(("ForceOn", false)));
    }
}

//! The chassis behind an emulated BMC in the tests: OpenIPMI's `ipmi_sim` runs this program
//! (its `chassis_control`) as `PROG get power boot` and `PROG set power 1`, and it keeps the
//! chassis state (power, next boot device) in a small file given with `--state`. The lab's
//! chassis, which drives a real VM, arrives with `ferric lab`.

use std::collections::BTreeMap;
use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1).collect::<Vec<_>>();
    let state = match args.iter().position(|a| a == "--state") {
        Some(i) if i + 1 < args.len() => {
            let p = PathBuf::from(args.remove(i + 1));
            args.remove(i);
            p
        }
        _ => {
            eprintln!("usage: ferric-chassis-sim --state FILE (get KEY… | set KEY VALUE)");
            std::process::exit(2);
        }
    };
    let mut kv: BTreeMap<String, String> = std::fs::read_to_string(&state)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    kv.entry("power".into()).or_insert_with(|| "0".into());
    kv.entry("boot".into()).or_insert_with(|| "default".into());
    // ipmi_sim may put the BMC's address first.
    if args.first().is_some_and(|a| a.starts_with("0x")) {
        args.remove(0);
    }
    match args.first().map(String::as_str) {
        Some("get") => {
            for k in &args[1..] {
                if let Some(v) = kv.get(k) {
                    println!("{k}:{v}");
                }
            }
        }
        Some("set") if args.len() >= 3 => {
            let (k, v) = (args[1].clone(), args[2].clone());
            match k.as_str() {
                // A reset or an ACPI shutdown request, as a chassis would take them.
                "reset" => {
                    kv.insert("resets".into(), {
                        let n: u32 = kv.get("resets").and_then(|n| n.parse().ok()).unwrap_or(0);
                        (n + 1).to_string()
                    });
                }
                "shutdown" => {
                    kv.insert("power".into(), "0".into());
                }
                _ => {
                    kv.insert(k, v);
                }
            }
            let text: String = kv.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
            let tmp = state.with_extension("tmp");
            if std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, &state))
                .is_err()
            {
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!("unknown request {args:?}");
            std::process::exit(2);
        }
    }
}

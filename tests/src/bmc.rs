//! Emulated BMCs for the tests: OpenIPMI's `ipmi_sim` serving IPMI 2.0 over LAN on loopback,
//! with `ferric-chassis-sim` as its chassis, and `ipmitool` to read the same BMC back. Its
//! lan.conf and emulator commands are written by [`ferric_lab::bmc`], as a lab node's are.

use anyhow::{Context, Result, bail};
use ferric_lab::bmc::{EmuSensor, LanConf, SimUser, write_sim_config};
use ferric_lab::bmc_lan::UdpRelay;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// User and password of the emulated BMCs' administrator.
pub const ADMIN: (&str, &str) = ("admin", "ferric-bmc-secret");

/// An analog sensor of the emulated BMC: its SDR says `value = M·raw·10^R`.
#[derive(Debug, Clone, Copy)]
pub struct SimSensor {
    /// ID string.
    pub name: &'static str,
    /// Sensor number.
    pub number: u8,
    /// IPMI sensor type (1 temperature, 2 voltage, 4 fan).
    pub sensor_type: u8,
    /// IPMI base unit (1 °C, 4 volts, 18 RPM).
    pub unit: u8,
    /// M.
    pub m: u8,
    /// Result exponent R.
    pub r_exp: i8,
    /// Raw reading the BMC reports.
    pub raw: u8,
    /// The reading it stands for.
    pub value: f64,
}

/// The emulated BMC's sensors.
pub const SENSORS: [SimSensor; 3] = [
    SimSensor {
        name: "CPU Temp",
        number: 1,
        sensor_type: 0x01,
        unit: 1,
        m: 1,
        r_exp: 0,
        raw: 45,
        value: 45.0,
    },
    SimSensor {
        name: "Fan 1",
        number: 2,
        sensor_type: 0x04,
        unit: 18,
        m: 50,
        r_exp: 0,
        raw: 60,
        value: 3000.0,
    },
    SimSensor {
        name: "12V",
        number: 3,
        sensor_type: 0x02,
        unit: 4,
        m: 6,
        r_exp: -2,
        raw: 200,
        value: 12.0,
    },
];

/// A Full Sensor Record (IPMI 2.0, table 43-1) for a linear threshold sensor owned by the BMC.
pub fn full_sensor_sdr(id: u16, s: &SimSensor) -> Vec<u8> {
    let [id_lo, id_hi] = id.to_le_bytes();
    let mut body = vec![
        0x20,          // owner: the BMC
        0x00,          // owner LUN
        s.number,      // sensor number
        0x07,          // entity: system board
        0x01,          // entity instance
        0x7f,          // initialization
        0x68,          // capabilities
        s.sensor_type, // sensor type
        0x01,          // event/reading type: threshold
        0,
        0,
        0,
        0,
        0,
        0,                             // event masks
        0x00,                          // units 1: unsigned, no rate, no modifier
        s.unit,                        // base unit
        0x00,                          // modifier unit
        0x00,                          // linear
        s.m,                           // M (low 8 bits)
        0x00,                          // M high bits, tolerance
        0x00,                          // B
        0x00,                          // B high bits, accuracy
        0x00,                          // accuracy, direction
        ((s.r_exp as u8) & 0x0f) << 4, // R exponent | B exponent 0
        0x00,                          // analog characteristics
        s.raw,                         // nominal
        0xff,                          // normal max
        0x00,                          // normal min
        0xff,                          // sensor max
        0x00,                          // sensor min
        0,
        0,
        0,
        0,
        0,
        0, // thresholds
        0,
        0, // hysteresis
        0,
        0,    // reserved
        0x00, // OEM
    ];
    body.push(0xc0 | s.name.len() as u8);
    body.extend_from_slice(s.name.as_bytes());
    let mut rec = vec![id_lo, id_hi, 0x51, 0x01, body.len() as u8];
    rec.extend(body);
    rec
}

/// A running `ipmi_sim`.
#[derive(Debug)]
pub struct SimBmc {
    child: Option<Child>,
    /// UDP port of its LAN interface on 127.0.0.1.
    pub port: u16,
    /// The chassis state file (`power:1`, `boot:pxe`).
    pub state: PathBuf,
    /// TCP port of its VM interface (QEMU's `ipmi-bmc-extern` connects here), if any.
    pub vm_port: Option<u16>,
    dir: PathBuf,
}

impl SimBmc {
    /// Starts a BMC whose files live in `dir`.
    pub fn start(dir: &Path) -> Result<SimBmc> {
        let port = crate::free_port()?;
        Self::start_on(dir, port)
    }

    /// Starts a BMC with a VM interface as well, for a QEMU machine's in-band IPMI.
    pub fn start_with_vm(dir: &Path) -> Result<SimBmc> {
        let port = crate::free_port()?;
        let vm = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        Self::launch(dir, port, Some(vm))
    }

    /// Starts a BMC on `port` (to bring one back on the same address).
    pub fn start_on(dir: &Path, port: u16) -> Result<SimBmc> {
        Self::launch(dir, port, None)
    }

    fn launch(dir: &Path, port: u16, vm_port: Option<u16>) -> Result<SimBmc> {
        std::fs::create_dir_all(dir)?;
        let chassis = crate::bin("ferric-chassis-sim")?;
        let state = dir.join("chassis");
        let (user, password) = ADMIN;
        let lan = LanConf {
            name: "ferric-test".into(),
            port,
            guid: 0xa123_4567_89ab_cdef_a123_4567_89ab_cdef_u128.to_be_bytes(),
            vm_port,
            chassis_control: format!("{} --state {}", chassis.display(), state.display()),
            // The administrator may hold 32 sessions: a login cut short by a lossy path leaves
            // a half-open session on the BMC until it times out, and the 30%-loss test makes
            // several (see docs/design.md, "BMC").
            users: vec![
                SimUser {
                    id: 2,
                    name: user.into(),
                    password: password.into(),
                    privilege: "admin",
                    max_sessions: 32,
                },
                SimUser {
                    id: 3,
                    name: "viewer".into(),
                    password: "viewer-secret".into(),
                    privilege: "user",
                    max_sessions: 10,
                },
            ],
        };
        let sensors: Vec<EmuSensor> = SENSORS
            .iter()
            .enumerate()
            .map(|(i, s)| EmuSensor {
                sdr: full_sensor_sdr(i as u16 + 1, s),
                number: s.number,
                sensor_type: s.sensor_type,
                raw: s.raw,
            })
            .collect();
        let args = write_sim_config(dir, &lan, &sensors)?;
        let log = std::fs::File::create(dir.join("ipmi_sim.log"))?;
        let child = Command::new("ipmi_sim")
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start ipmi_sim (Debian package openipmi)")?;
        let bmc = SimBmc {
            child: Some(child),
            port,
            state,
            vm_port,
            dir: dir.to_owned(),
        };
        // Ready when ipmitool gets an answer.
        let started = Instant::now();
        while bmc.ipmitool(&["mc", "info"]).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!(
                    "ipmi_sim did not answer on port {port}: {}",
                    std::fs::read_to_string(dir.join("ipmi_sim.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(bmc)
    }

    /// The BMC's address as Ferric enrolls it: `ipmi://admin@127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("ipmi://{}@127.0.0.1:{}", ADMIN.0, self.port)
    }

    /// Runs `ipmitool -I lanplus` against this BMC as the administrator.
    pub fn ipmitool(&self, args: &[&str]) -> Result<String> {
        Ok(ferric_lab::run(
            Command::new("ipmitool")
                .args([
                    "-I",
                    "lanplus",
                    "-C",
                    "3",
                    "-N",
                    "1",
                    "-R",
                    "2",
                    "-H",
                    "127.0.0.1",
                ])
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-U", ADMIN.0, "-P", ADMIN.1])
                .args(args),
        )?)
    }

    /// What `ipmitool chassis power status` says of it (`Chassis Power is on`).
    pub fn power_status(&self) -> Result<String> {
        self.ipmitool(&["chassis", "power", "status"])
    }

    /// The chassis state file's `key`.
    pub fn chassis(&self, key: &str) -> Option<String> {
        std::fs::read_to_string(&self.state)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")).map(str::to_owned))
    }

    /// Stops the BMC (it stops answering).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SimBmc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A UDP relay on loopback that drops a share of the datagrams in each direction, standing in
/// for a lossy management network (the lab's [`UdpRelay`] in a thread).
#[derive(Debug)]
pub struct LossyRelay {
    /// Port clients send to.
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LossyRelay {
    /// Relays to `127.0.0.1:target`, dropping `loss_pct` percent of datagrams each way.
    pub fn start(target: u16, loss_pct: u32) -> Result<LossyRelay> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let front = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = front.local_addr()?.port();
        // Short, so that answers waiting on the back sockets are not held up.
        front.set_read_timeout(Some(Duration::from_millis(2)))?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let mut relay = UdpRelay::new(front, target);
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut seed = 0x853c_49e6_748f_ea9b_u64 ^ u64::from(port);
            let mut drop_it = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % 100) < u64::from(loss_pct)
            };
            while !stopped.load(Ordering::Relaxed) {
                let _ = relay.pump(&mut buf, &mut drop_it);
            }
        });
        Ok(LossyRelay { port, stop })
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

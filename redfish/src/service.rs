//! A BMC's Redfish service for one machine: what a provisioning system uses of DSP0266 and
//! the Redfish schemas, and nothing it does not serve.
//!
//! * The service root, `$metadata` and the OData service document, unauthenticated.
//! * `SessionService` with `Sessions` (a login answers 201 with `X-Auth-Token` and the
//!   session's `Location`; sessions end at logout or after [`ServiceConfig::session_timeout`]
//!   idle), and HTTP basic authentication on every other request.
//! * `Systems/{id}`: power state, `ComputerSystem.Reset` with its `ActionInfo`, the boot
//!   override (PATCH), processors, memory and NICs from [`Machine::inventory`].
//! * The system's `VirtualMedia/Cd` (`InsertMedia`, `EjectMedia`; under the system, where
//!   Redfish keeps it since the manager's was deprecated).
//! * `Chassis/{id}` and `Managers/{id}`, and the manager's event log (`LogServices/Sel`), in which the service records what
//!   it did to the machine.
//!
//! The machine is behind [`Machine`]; its calls may block (the lab's start QEMU), so they run
//! on tokio's blocking pool.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use ferric_proto::hardware::Inventory;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The reset types the service offers.
pub const RESET_TYPES: &[&str] = &[
    "On",
    "ForceOff",
    "GracefulShutdown",
    "ForceRestart",
    "PowerCycle",
];

/// The boot override targets the service offers.
pub const BOOT_TARGETS: &[&str] = &["None", "Pxe", "Hdd", "Cd", "BiosSetup", "UefiHttp"];

/// A system's boot override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// `None`, `Pxe`, `Hdd`, `Cd`, `BiosSetup`, `UefiHttp`.
    pub target: String,
    /// `Disabled`, `Once`, `Continuous`.
    pub enabled: String,
    /// `UEFI` or `Legacy`.
    pub mode: String,
}

impl Default for Boot {
    fn default() -> Boot {
        Boot {
            target: "None".into(),
            enabled: "Disabled".into(),
            mode: "UEFI".into(),
        }
    }
}

/// The machine behind the service.
pub trait Machine: Send + Sync + std::fmt::Debug + 'static {
    /// Whether it is powered on.
    fn power_on(&self) -> bool;
    /// Carries out a reset type of [`RESET_TYPES`]; `boot` is the override in force for the
    /// boot it may start.
    fn reset(&self, reset: &str, boot: &Boot) -> Result<(), String>;
    /// The boot override changed (a running machine takes it at its next boot).
    fn boot_changed(&self, boot: &Boot) -> Result<(), String>;
    /// Fetches the image at `url` and inserts it as a CD.
    fn insert_media(&self, url: &str) -> Result<(), String>;
    /// Ejects the CD.
    fn eject_media(&self) -> Result<(), String>;
    /// The hardware, as the BMC knows it without booting the machine.
    fn inventory(&self) -> Inventory;
}

/// Who logs in, and what the service calls itself.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The one account.
    pub user: String,
    /// Its password.
    pub password: String,
    /// The system's id (the last segment of its URI).
    pub system_id: String,
    /// The service's and the system's UUID.
    pub uuid: String,
    /// Idle time after which a session ends.
    pub session_timeout: Duration,
    /// Most sessions at once (the oldest goes when a login would pass it).
    pub max_sessions: usize,
}

impl ServiceConfig {
    /// A configuration for one account.
    pub fn new(user: &str, password: &str) -> ServiceConfig {
        ServiceConfig {
            user: user.into(),
            password: password.into(),
            system_id: "1".into(),
            uuid: "00000000-0000-4000-8000-000000000001".into(),
            session_timeout: Duration::from_secs(600),
            max_sessions: 64,
        }
    }
}

#[derive(Debug)]
struct Session {
    id: String,
    token: String,
    used: Instant,
}

#[derive(Debug)]
struct LogEntry {
    id: u32,
    created: String,
    severity: &'static str,
    message: String,
}

#[derive(Debug, Default)]
struct Media {
    image: Option<String>,
}

#[derive(Debug)]
struct Inner {
    boot: Boot,
    sessions: Vec<Session>,
    next_session: u64,
    media: Media,
    log: Vec<LogEntry>,
    next_log: u32,
}

/// The service: its state, shared by the connections.
#[derive(Debug)]
pub struct Service {
    cfg: ServiceConfig,
    machine: Arc<dyn Machine>,
    inner: Mutex<Inner>,
    failed_logins: AtomicU32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Now, RFC 3339 in UTC, to the second.
fn now_text() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A Redfish error answer (DSP0266, 9.6).
fn error(status: StatusCode, id: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    let body = json!({
        "error": {
            "code": format!("Base.1.8.{id}"),
            "message": message,
            "@Message.ExtendedInfo": [{
                "@odata.type": "#Message.v1_1_1.Message",
                "MessageId": format!("Base.1.8.{id}"),
                "Message": message,
                "Severity": "Critical",
                "MessageSeverity": "Critical",
                "Resolution": "See the message.",
            }],
        }
    });
    reply(status, body)
}

fn reply(status: StatusCode, body: Value) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut()
        .insert("OData-Version", HeaderValue::from_static("4.0"));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn ok(body: Value) -> Response {
    reply(StatusCode::OK, body)
}

fn no_content() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert("OData-Version", HeaderValue::from_static("4.0"));
    r
}

fn id(uri: &str) -> Value {
    json!({ "@odata.id": uri })
}

fn collection(uri: &str, ty: &str, name: &str, members: &[String]) -> Value {
    json!({
        "@odata.id": uri,
        "@odata.type": format!("#{ty}.{ty}"),
        "Name": name,
        "Members": members.iter().map(|m| id(m)).collect::<Vec<_>>(),
        "Members@odata.count": members.len(),
    })
}

const STATUS_OK: fn() -> Value = || json!({"State": "Enabled", "Health": "OK"});

const SYSTEMS: &str = "/redfish/v1/Systems";
const CHASSIS: &str = "/redfish/v1/Chassis/1";
const MANAGER: &str = "/redfish/v1/Managers/bmc";
const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";

/// The schemas the service's resources use, by namespace and version (for `$metadata`).
const SCHEMAS: &[(&str, &str)] = &[
    ("ServiceRoot", "ServiceRoot_v1.xml"),
    (
        "ComputerSystemCollection",
        "ComputerSystemCollection_v1.xml",
    ),
    ("ComputerSystem", "ComputerSystem_v1.xml"),
    ("ActionInfo", "ActionInfo_v1.xml"),
    ("ProcessorCollection", "ProcessorCollection_v1.xml"),
    ("Processor", "Processor_v1.xml"),
    ("MemoryCollection", "MemoryCollection_v1.xml"),
    ("Memory", "Memory_v1.xml"),
    (
        "EthernetInterfaceCollection",
        "EthernetInterfaceCollection_v1.xml",
    ),
    ("EthernetInterface", "EthernetInterface_v1.xml"),
    ("ChassisCollection", "ChassisCollection_v1.xml"),
    ("Chassis", "Chassis_v1.xml"),
    ("ManagerCollection", "ManagerCollection_v1.xml"),
    ("Manager", "Manager_v1.xml"),
    ("VirtualMediaCollection", "VirtualMediaCollection_v1.xml"),
    ("VirtualMedia", "VirtualMedia_v1.xml"),
    ("LogServiceCollection", "LogServiceCollection_v1.xml"),
    ("LogService", "LogService_v1.xml"),
    ("LogEntryCollection", "LogEntryCollection_v1.xml"),
    ("LogEntry", "LogEntry_v1.xml"),
    ("SessionService", "SessionService_v1.xml"),
    ("SessionCollection", "SessionCollection_v1.xml"),
    ("Session", "Session_v1.xml"),
    ("Message", "Message_v1.xml"),
    ("Resource", "Resource_v1.xml"),
];

fn metadata() -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<edmx:Edmx xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\" Version=\"4.0\">\n",
    );
    for (ns, file) in SCHEMAS {
        s.push_str(&format!(
            "  <edmx:Reference Uri=\"http://redfish.dmtf.org/schemas/v1/{file}\">\n    <edmx:Include Namespace=\"{ns}\"/>\n"
        ));
        if *ns != "Resource" && *ns != "Message" && !ns.ends_with("Collection") {
            // The versioned namespaces the resources' @odata.type name.
            let v = versioned(ns);
            s.push_str(&format!("    <edmx:Include Namespace=\"{ns}.{v}\"/>\n"));
        }
        s.push_str("  </edmx:Reference>\n");
    }
    s.push_str(
        "  <edmx:DataServices>\n    <Schema xmlns=\"http://docs.oasis-open.org/odata/ns/edm\" Namespace=\"Service\">\n      <EntityContainer Name=\"Service\" Extends=\"ServiceRoot.v1_5_0.ServiceContainer\"/>\n    </Schema>\n  </edmx:DataServices>\n</edmx:Edmx>\n",
    );
    s
}

/// The schema version each resource is written to.
fn versioned(ns: &str) -> &'static str {
    match ns {
        "ServiceRoot" => "v1_5_0",
        "ComputerSystem" => "v1_13_0",
        "ActionInfo" => "v1_1_2",
        "Processor" => "v1_7_0",
        "Memory" => "v1_7_0",
        "EthernetInterface" => "v1_5_0",
        "Chassis" => "v1_11_0",
        "Manager" => "v1_10_0",
        "VirtualMedia" => "v1_3_0",
        "LogService" => "v1_1_3",
        "LogEntry" => "v1_4_0",
        "SessionService" => "v1_1_8",
        "Session" => "v1_1_0",
        _ => "v1_0_0",
    }
}

fn ty(ns: &str) -> String {
    format!("#{ns}.{}.{ns}", versioned(ns))
}

impl Service {
    /// A service for `machine`.
    pub fn new(cfg: ServiceConfig, machine: Arc<dyn Machine>) -> Arc<Service> {
        Arc::new(Service {
            cfg,
            machine,
            inner: Mutex::new(Inner {
                boot: Boot::default(),
                sessions: Vec::new(),
                next_session: 1,
                media: Media::default(),
                log: Vec::new(),
                next_log: 1,
            }),
            failed_logins: AtomicU32::new(0),
        })
    }

    /// Logins and basic authentications refused so far.
    pub fn failed_logins(&self) -> u32 {
        self.failed_logins.load(Ordering::Relaxed)
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        lock(&self.inner).sessions.len()
    }

    /// The boot override in force.
    pub fn boot(&self) -> Boot {
        lock(&self.inner).boot.clone()
    }

    /// The router (mount it at `/`).
    pub fn router(self: &Arc<Service>) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    fn system_uri(&self) -> String {
        format!("{SYSTEMS}/{}", self.cfg.system_id)
    }

    fn log(&self, severity: &'static str, message: String) {
        let mut i = lock(&self.inner);
        let id = i.next_log;
        i.next_log += 1;
        i.log.push(LogEntry {
            id,
            created: now_text(),
            severity,
            message,
        });
        // A BMC's log is bounded; the oldest entries go.
        if i.log.len() > 512 {
            i.log.remove(0);
        }
    }

    /// Who is asking: a valid session token or basic credentials.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let mut i = lock(&self.inner);
        let timeout = self.cfg.session_timeout;
        i.sessions.retain(|s| s.used.elapsed() < timeout);
        if let Some(tok) = headers.get("x-auth-token").and_then(|v| v.to_str().ok()) {
            if let Some(s) = i.sessions.iter_mut().find(|s| s.token == tok) {
                s.used = Instant::now();
                return true;
            }
            drop(i);
            self.failed_logins.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        drop(i);
        let good = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64_decode(b.trim()))
            .is_some_and(|up| {
                up.split_once(':')
                    .is_some_and(|(u, p)| u == self.cfg.user && p == self.cfg.password)
            });
        if !good && headers.contains_key(header::AUTHORIZATION) {
            self.failed_logins.fetch_add(1, Ordering::Relaxed);
        }
        good
    }

    fn login(&self, body: &Value) -> Response {
        let user = body.get("UserName").and_then(Value::as_str);
        let pass = body.get("Password").and_then(Value::as_str);
        let (Some(user), Some(pass)) = (user, pass) else {
            return error(
                StatusCode::BAD_REQUEST,
                "PropertyMissing",
                "a login needs UserName and Password",
            );
        };
        if user != self.cfg.user || pass != self.cfg.password {
            self.failed_logins.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::UNAUTHORIZED,
                "NoValidSession",
                "the user name or password is not valid",
            );
        }
        let mut token = [0u8; 24];
        rand::Rng::fill(&mut rand::rng(), &mut token[..]);
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        let mut i = lock(&self.inner);
        let sid = i.next_session.to_string();
        i.next_session += 1;
        if i.sessions.len() >= self.cfg.max_sessions {
            i.sessions.remove(0);
        }
        i.sessions.push(Session {
            id: sid.clone(),
            token: token.clone(),
            used: Instant::now(),
        });
        drop(i);
        let loc = format!("{SESSIONS}/{sid}");
        let mut r = reply(StatusCode::CREATED, self.session_json(&sid, user));
        if let (Ok(t), Ok(l)) = (HeaderValue::from_str(&token), HeaderValue::from_str(&loc)) {
            r.headers_mut().insert("X-Auth-Token", t);
            r.headers_mut().insert(header::LOCATION, l);
        }
        r
    }

    fn session_json(&self, sid: &str, user: &str) -> Value {
        json!({
            "@odata.id": format!("{SESSIONS}/{sid}"),
            "@odata.type": ty("Session"),
            "Id": sid,
            "Name": "User Session",
            "UserName": user,
        })
    }

    fn root(&self) -> Value {
        json!({
            "@odata.id": "/redfish/v1/",
            "@odata.type": ty("ServiceRoot"),
            "Id": "RootService",
            "Name": "Root Service",
            "RedfishVersion": "1.11.0",
            "UUID": self.cfg.uuid,
            "Vendor": "Ferric",
            "Product": "Ferric lab BMC",
            "Systems": id(SYSTEMS),
            "Chassis": id("/redfish/v1/Chassis"),
            "Managers": id("/redfish/v1/Managers"),
            "SessionService": id("/redfish/v1/SessionService"),
            "Links": { "Sessions": id(SESSIONS) },
        })
    }

    fn system(&self, on: bool) -> Value {
        let inv = self.machine.inventory();
        let b = self.boot();
        let uri = self.system_uri();
        json!({
            "@odata.id": uri,
            "@odata.type": ty("ComputerSystem"),
            "Id": self.cfg.system_id,
            "Name": "Computer System",
            "SystemType": "Physical",
            "Manufacturer": inv.dmi.vendor,
            "Model": inv.dmi.product,
            "SerialNumber": inv.dmi.serial,
            "UUID": self.cfg.uuid,
            "PowerState": if on { "On" } else { "Off" },
            "Status": STATUS_OK(),
            "ProcessorSummary": {
                "Count": 1,
                "LogicalProcessorCount": inv.cpu.count,
                "Model": inv.cpu.model,
            },
            "MemorySummary": {
                "TotalSystemMemoryGiB": inv.memory_bytes as f64 / f64::from(1u32 << 30),
            },
            "Boot": {
                "BootSourceOverrideEnabled": b.enabled,
                "BootSourceOverrideTarget": b.target,
                "BootSourceOverrideTarget@Redfish.AllowableValues": BOOT_TARGETS,
                "BootSourceOverrideMode": b.mode,
            },
            "Processors": id(&format!("{uri}/Processors")),
            "Memory": id(&format!("{uri}/Memory")),
            "EthernetInterfaces": id(&format!("{uri}/EthernetInterfaces")),
            "VirtualMedia": id(&format!("{uri}/VirtualMedia")),
            "Links": {
                "Chassis": [id(CHASSIS)],
                "ManagedBy": [id(MANAGER)],
            },
            "Actions": {
                "#ComputerSystem.Reset": {
                    "target": format!("{uri}/Actions/ComputerSystem.Reset"),
                    "@Redfish.ActionInfo": format!("{uri}/ResetActionInfo"),
                }
            },
        })
    }

    fn media_json(&self) -> Value {
        let image = lock(&self.inner).media.image.clone();
        let uri = format!("{}/VirtualMedia/Cd", self.system_uri());
        json!({
            "@odata.id": uri,
            "@odata.type": ty("VirtualMedia"),
            "Id": "Cd",
            "Name": "Virtual CD",
            "MediaTypes": ["CD", "DVD"],
            "ConnectedVia": if image.is_some() { "URI" } else { "NotConnected" },
            "Image": image,
            "ImageName": image.as_deref().map(|i| i.rsplit('/').next().unwrap_or(i)),
            "Inserted": image.is_some(),
            "WriteProtected": true,
            "TransferProtocolType": image.as_deref().map(|i| if i.starts_with("https") { "HTTPS" } else { "HTTP" }),
            "Actions": {
                "#VirtualMedia.InsertMedia": { "target": format!("{uri}/Actions/VirtualMedia.InsertMedia") },
                "#VirtualMedia.EjectMedia": { "target": format!("{uri}/Actions/VirtualMedia.EjectMedia") },
            },
        })
    }

    /// A GET of `path` (authorized).
    fn get(&self, path: &str) -> Response {
        let sys = self.system_uri();
        let inv = || self.machine.inventory();
        match path {
            "/redfish/v1/Systems" => ok(collection(
                SYSTEMS,
                "ComputerSystemCollection",
                "Computer System Collection",
                &[sys],
            )),
            p if p == sys => ok(self.system(self.machine.power_on())),
            p if p == format!("{sys}/ResetActionInfo") => ok(json!({
                "@odata.id": p,
                "@odata.type": ty("ActionInfo"),
                "Id": "ResetActionInfo",
                "Name": "Reset Action Info",
                "Parameters": [{
                    "Name": "ResetType",
                    "Required": true,
                    "DataType": "String",
                    "AllowableValues": RESET_TYPES,
                }],
            })),
            p if p == format!("{sys}/Processors") => ok(collection(
                p,
                "ProcessorCollection",
                "Processors",
                &[format!("{p}/CPU1")],
            )),
            p if p == format!("{sys}/Processors/CPU1") => {
                let inv = inv();
                ok(json!({
                    "@odata.id": p,
                    "@odata.type": ty("Processor"),
                    "Id": "CPU1",
                    "Name": "Processor",
                    "ProcessorType": "CPU",
                    "Model": inv.cpu.model,
                    "TotalCores": inv.cpu.count,
                    "TotalThreads": inv.cpu.count,
                    "Status": STATUS_OK(),
                }))
            }
            p if p == format!("{sys}/Memory") => ok(collection(
                p,
                "MemoryCollection",
                "Memory",
                &[format!("{p}/DIMM1")],
            )),
            p if p == format!("{sys}/Memory/DIMM1") => ok(json!({
                "@odata.id": p,
                "@odata.type": ty("Memory"),
                "Id": "DIMM1",
                "Name": "DIMM 1",
                "CapacityMiB": inv().memory_bytes >> 20,
                "MemoryDeviceType": "DDR4",
                "Status": STATUS_OK(),
            })),
            p if p == format!("{sys}/EthernetInterfaces") => {
                let members: Vec<String> = (1..=inv().nics.len())
                    .map(|i| format!("{p}/NIC{i}"))
                    .collect();
                ok(collection(
                    p,
                    "EthernetInterfaceCollection",
                    "Ethernet Interfaces",
                    &members,
                ))
            }
            p if p.starts_with(&format!("{sys}/EthernetInterfaces/NIC")) => {
                let n: Option<usize> = p.rsplit("NIC").next().and_then(|n| n.parse().ok());
                let inv = inv();
                match n
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|i| inv.nics.get(i))
                {
                    Some(nic) => ok(json!({
                        "@odata.id": p,
                        "@odata.type": ty("EthernetInterface"),
                        "Id": format!("NIC{}", n.unwrap_or(0)),
                        "Name": nic.name,
                        "MACAddress": nic.mac.to_ascii_uppercase(),
                        "PermanentMACAddress": nic.mac.to_ascii_uppercase(),
                        "LinkStatus": if nic.link_up { "LinkUp" } else { "NoLink" },
                        "Status": STATUS_OK(),
                    })),
                    None => not_found(p),
                }
            }
            "/redfish/v1/Chassis" => ok(collection(
                "/redfish/v1/Chassis",
                "ChassisCollection",
                "Chassis Collection",
                &[CHASSIS.into()],
            )),
            CHASSIS => ok(json!({
                "@odata.id": CHASSIS,
                "@odata.type": ty("Chassis"),
                "Id": "1",
                "Name": "Chassis",
                "ChassisType": "RackMount",
                "PowerState": if self.machine.power_on() { "On" } else { "Off" },
                "Status": STATUS_OK(),
                "Links": {
                    "ComputerSystems": [id(&sys)],
                    "ManagedBy": [id(MANAGER)],
                },
            })),
            "/redfish/v1/Managers" => ok(collection(
                "/redfish/v1/Managers",
                "ManagerCollection",
                "Manager Collection",
                &[MANAGER.into()],
            )),
            MANAGER => ok(json!({
                "@odata.id": MANAGER,
                "@odata.type": ty("Manager"),
                "Id": "bmc",
                "Name": "Manager",
                "ManagerType": "BMC",
                "UUID": self.cfg.uuid,
                "Status": STATUS_OK(),
                "LogServices": id(&format!("{MANAGER}/LogServices")),
                "Links": {
                    "ManagerForServers": [id(&sys)],
                    "ManagerForChassis": [id(CHASSIS)],
                },
            })),
            p if p == format!("{sys}/VirtualMedia") => ok(collection(
                p,
                "VirtualMediaCollection",
                "Virtual Media",
                &[format!("{sys}/VirtualMedia/Cd")],
            )),
            p if p == format!("{sys}/VirtualMedia/Cd") => ok(self.media_json()),
            "/redfish/v1/Managers/bmc/LogServices" => ok(collection(
                path,
                "LogServiceCollection",
                "Log Services",
                &[format!("{MANAGER}/LogServices/Sel")],
            )),
            "/redfish/v1/Managers/bmc/LogServices/Sel" => ok(json!({
                "@odata.id": path,
                "@odata.type": ty("LogService"),
                "Id": "Sel",
                "Name": "System Event Log",
                "MaxNumberOfRecords": 512,
                "OverWritePolicy": "WrapsWhenFull",
                "ServiceEnabled": true,
                "Status": STATUS_OK(),
                "Entries": id(&format!("{path}/Entries")),
                "Actions": {
                    "#LogService.ClearLog": { "target": format!("{path}/Actions/LogService.ClearLog") }
                },
            })),
            "/redfish/v1/Managers/bmc/LogServices/Sel/Entries" => {
                let i = lock(&self.inner);
                let members: Vec<Value> = i.log.iter().map(|e| self.entry_json(e)).collect();
                ok(json!({
                    "@odata.id": path,
                    "@odata.type": "#LogEntryCollection.LogEntryCollection",
                    "Name": "System Event Log Entries",
                    "Members@odata.count": members.len(),
                    "Members": members,
                }))
            }
            p if p.starts_with("/redfish/v1/Managers/bmc/LogServices/Sel/Entries/") => {
                let n: Option<u32> = p.rsplit('/').next().and_then(|n| n.parse().ok());
                let i = lock(&self.inner);
                match i.log.iter().find(|e| Some(e.id) == n) {
                    Some(e) => ok(self.entry_json(e)),
                    None => not_found(p),
                }
            }
            "/redfish/v1/SessionService" => ok(json!({
                "@odata.id": path,
                "@odata.type": ty("SessionService"),
                "Id": "SessionService",
                "Name": "Session Service",
                "ServiceEnabled": true,
                "SessionTimeout": self.cfg.session_timeout.as_secs(),
                "Status": STATUS_OK(),
                "Sessions": id(SESSIONS),
            })),
            SESSIONS => {
                let ids: Vec<String> = lock(&self.inner)
                    .sessions
                    .iter()
                    .map(|s| format!("{SESSIONS}/{}", s.id))
                    .collect();
                ok(collection(SESSIONS, "SessionCollection", "Sessions", &ids))
            }
            p if p.starts_with("/redfish/v1/SessionService/Sessions/") => {
                let sid = p.rsplit('/').next().unwrap_or("");
                let exists = lock(&self.inner).sessions.iter().any(|s| s.id == sid);
                if exists {
                    ok(self.session_json(sid, &self.cfg.user))
                } else {
                    not_found(p)
                }
            }
            p => not_found(p),
        }
    }

    fn entry_json(&self, e: &LogEntry) -> Value {
        json!({
            "@odata.id": format!("{MANAGER}/LogServices/Sel/Entries/{}", e.id),
            "@odata.type": ty("LogEntry"),
            "Id": e.id.to_string(),
            "Name": format!("Log Entry {}", e.id),
            "EntryType": "Event",
            "Created": e.created,
            "Severity": e.severity,
            "Message": e.message,
        })
    }
}

fn not_found(path: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ResourceMissingAtURI",
        format!("the resource at {path} does not exist"),
    )
}

fn base64_decode(s: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    String::from_utf8(bytes).ok()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

async fn handle(
    State(svc): State<Arc<Service>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw = uri.path();
    // `/redfish/v1/` and `/redfish/v1` are the same resource; so is any URI with a trailing
    // slash.
    let path = if raw.len() > 1 {
        raw.trim_end_matches('/')
    } else {
        raw
    };
    let json_body = || -> Result<Value, String> {
        if body.is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(&body).map_err(|e| format!("the request body is not JSON: {e}"))
    };
    let malformed = |e: String| error(StatusCode::BAD_REQUEST, "MalformedJSON", e);
    // Unauthenticated: the service root, the OData documents, and the login itself.
    match (&method, path) {
        (&Method::GET, "/redfish") => return ok(json!({ "v1": "/redfish/v1/" })),
        (&Method::GET, "/redfish/v1") => return ok(svc.root()),
        (&Method::GET, "/redfish/v1/$metadata") => {
            let mut r = metadata().into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml"),
            );
            r.headers_mut()
                .insert("OData-Version", HeaderValue::from_static("4.0"));
            return r;
        }
        (&Method::GET, "/redfish/v1/odata") => {
            let names = [
                ("Systems", SYSTEMS),
                ("Chassis", "/redfish/v1/Chassis"),
                ("Managers", "/redfish/v1/Managers"),
                ("SessionService", "/redfish/v1/SessionService"),
                ("Sessions", SESSIONS),
            ];
            return ok(json!({
                "@odata.context": "/redfish/v1/$metadata",
                "value": names.iter().map(|(n, u)| json!({"name": n, "kind": "Singleton", "url": u})).collect::<Vec<_>>(),
            }));
        }
        (&Method::POST, SESSIONS) => {
            return match json_body() {
                Ok(b) => svc.login(&b),
                Err(e) => malformed(e),
            };
        }
        _ => {}
    }
    if !svc.authorized(&headers) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "NoValidSession",
            "log in (POST /redfish/v1/SessionService/Sessions) or use basic authentication",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Redfish\""),
        );
        return r;
    }
    let sys = svc.system_uri();
    match method {
        Method::GET | Method::HEAD => {
            let s = svc.clone();
            let p = path.to_owned();
            blocking(move || s.get(&p)).await.unwrap_or_else(|| {
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "the handler failed",
                )
            })
        }
        Method::DELETE if path.starts_with("/redfish/v1/SessionService/Sessions/") => {
            let sid = path.rsplit('/').next().unwrap_or("");
            let mut i = lock(&svc.inner);
            let before = i.sessions.len();
            i.sessions.retain(|s| s.id != sid);
            if i.sessions.len() < before {
                no_content()
            } else {
                not_found(path)
            }
        }
        Method::PATCH if path == sys => {
            let b = match json_body() {
                Ok(b) => b,
                Err(e) => return malformed(e),
            };
            patch_boot(&svc, &b).await
        }
        Method::POST if path == format!("{sys}/Actions/ComputerSystem.Reset") => {
            let b = match json_body() {
                Ok(b) => b,
                Err(e) => return malformed(e),
            };
            let Some(reset) = b
                .get("ResetType")
                .and_then(Value::as_str)
                .map(str::to_owned)
            else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "ActionParameterMissing",
                    "the Reset action needs ResetType",
                );
            };
            if !RESET_TYPES.contains(&reset.as_str()) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "ActionParameterValueNotInList",
                    format!("ResetType {reset} is not one of {}", RESET_TYPES.join(", ")),
                );
            }
            let s = svc.clone();
            let r = reset.clone();
            let result = blocking(move || {
                let boot = s.boot();
                let res = s.machine.reset(&r, &boot);
                // A boot override for one boot is spent by the boot it starts. The machine is
                // told, so that the boot after this one follows its own order again, as a
                // server's does.
                if res.is_ok()
                    && r != "ForceOff"
                    && r != "GracefulShutdown"
                    && boot.enabled == "Once"
                {
                    let spent = Boot {
                        target: "None".into(),
                        enabled: "Disabled".into(),
                        mode: boot.mode.clone(),
                    };
                    lock(&s.inner).boot = spent.clone();
                    if let Err(e) = s.machine.boot_changed(&spent) {
                        tracing::warn!(error = %e, "the machine did not take the spent boot override");
                    }
                }
                res
            })
            .await
            .unwrap_or_else(|| Err("the handler failed".into()));
            match result {
                Ok(()) => {
                    svc.log("OK", format!("Reset {reset}"));
                    no_content()
                }
                Err(e) => {
                    svc.log("Warning", format!("Reset {reset} failed: {e}"));
                    error(StatusCode::INTERNAL_SERVER_ERROR, "GeneralError", e)
                }
            }
        }
        Method::POST
            if path == format!("{sys}/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia") =>
        {
            let b = match json_body() {
                Ok(b) => b,
                Err(e) => return malformed(e),
            };
            let Some(image) = b.get("Image").and_then(Value::as_str).map(str::to_owned) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "ActionParameterMissing",
                    "InsertMedia needs Image",
                );
            };
            if !(image.starts_with("http://") || image.starts_with("https://")) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "ActionParameterValueFormatError",
                    format!("Image {image} is not an http:// or https:// URL"),
                );
            }
            if lock(&svc.inner).media.image.is_some() {
                return error(
                    StatusCode::CONFLICT,
                    "ResourceInUse",
                    "a medium is inserted: eject it first",
                );
            }
            let s = svc.clone();
            let i2 = image.clone();
            match blocking(move || s.machine.insert_media(&i2))
                .await
                .unwrap_or_else(|| Err("the handler failed".into()))
            {
                Ok(()) => {
                    lock(&svc.inner).media.image = Some(image.clone());
                    svc.log("OK", format!("Virtual media inserted: {image}"));
                    no_content()
                }
                Err(e) => error(StatusCode::BAD_REQUEST, "GeneralError", e),
            }
        }
        Method::POST
            if path == format!("{sys}/VirtualMedia/Cd/Actions/VirtualMedia.EjectMedia") =>
        {
            let s = svc.clone();
            match blocking(move || s.machine.eject_media())
                .await
                .unwrap_or_else(|| Err("the handler failed".into()))
            {
                Ok(()) => {
                    lock(&svc.inner).media.image = None;
                    svc.log("OK", "Virtual media ejected".into());
                    no_content()
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "GeneralError", e),
            }
        }
        Method::POST
            if path == "/redfish/v1/Managers/bmc/LogServices/Sel/Actions/LogService.ClearLog" =>
        {
            lock(&svc.inner).log.clear();
            no_content()
        }
        _ => {
            // A known resource that does not take the method, or nothing at all.
            let known = svc.get(path).status() != StatusCode::NOT_FOUND;
            if known {
                let mut r = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "OperationNotAllowed",
                    format!("{method} is not allowed on {path}"),
                );
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET"));
                r
            } else {
                not_found(path)
            }
        }
    }
}

async fn patch_boot(svc: &Arc<Service>, b: &Value) -> Response {
    let Some(obj) = b.as_object() else {
        return error(
            StatusCode::BAD_REQUEST,
            "MalformedJSON",
            "the body is not an object",
        );
    };
    if let Some(k) = obj.keys().find(|k| *k != "Boot") {
        return error(
            StatusCode::BAD_REQUEST,
            "PropertyNotWritable",
            format!("the property {k} is read-only here (only Boot is writable)"),
        );
    }
    let Some(boot) = obj.get("Boot").and_then(Value::as_object) else {
        return error(
            StatusCode::BAD_REQUEST,
            "PropertyValueTypeError",
            "Boot must be an object",
        );
    };
    let mut new = svc.boot();
    for (k, v) in boot {
        let Some(v) = v.as_str() else {
            return error(
                StatusCode::BAD_REQUEST,
                "PropertyValueTypeError",
                format!("Boot.{k} must be a string"),
            );
        };
        let (slot, allowed): (&mut String, &[&str]) = match k.as_str() {
            "BootSourceOverrideTarget" => (&mut new.target, BOOT_TARGETS),
            "BootSourceOverrideEnabled" => (&mut new.enabled, &["Disabled", "Once", "Continuous"]),
            "BootSourceOverrideMode" => (&mut new.mode, &["UEFI", "Legacy"]),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "PropertyUnknown",
                    format!("Boot.{k} is not a writable property here"),
                );
            }
        };
        if !allowed.contains(&v) {
            return error(
                StatusCode::BAD_REQUEST,
                "PropertyValueNotInList",
                format!("Boot.{k} {v} is not one of {}", allowed.join(", ")),
            );
        }
        *slot = v.to_owned();
    }
    let s = svc.clone();
    let b2 = new.clone();
    match blocking(move || s.machine.boot_changed(&b2))
        .await
        .unwrap_or_else(|| Err("the handler failed".into()))
    {
        Ok(()) => {
            lock(&svc.inner).boot = new.clone();
            svc.log(
                "OK",
                format!("Boot override {} {} {}", new.target, new.enabled, new.mode),
            );
            no_content()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "GeneralError", e),
    }
}

/// Serves `router` on `listener` until the process ends: TLS with `tls`, else plain HTTP.
/// Each connection is HTTP/1.1 with keep-alive.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let svc = hyper_util::service::TowerToHyperService::new(router);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .keep_alive(true);
            let r = match acceptor {
                Some(a) => {
                    match tokio::time::timeout(Duration::from_secs(10), a.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            builder
                                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                                .await
                        }
                        _ => return,
                    }
                }
                None => {
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await
                }
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "Redfish connection ended");
            }
        });
    }
}

/// A TLS configuration serving `cert_der` with `key_der` (PKCS#8).
pub fn tls_config(
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let chain = vec![rustls::pki_types::CertificateDer::from(cert_der)];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into());
    let mut c = rustls::ServerConfig::builder_with_provider(crate::trust::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// A machine in memory, for tests and benchmarks: power, the resets and boot overrides it
/// was given, and the medium inserted (nothing is fetched).
#[derive(Debug, Default)]
pub struct MemoryMachine {
    /// The hardware it reports.
    pub inventory: Inventory,
    state: Mutex<MemoryState>,
}

/// What a [`MemoryMachine`] went through.
#[derive(Debug, Default, Clone)]
pub struct MemoryState {
    /// Powered on.
    pub on: bool,
    /// Reset types, in order.
    pub resets: Vec<String>,
    /// The boot override of its last power-on.
    pub booted_with: Option<Boot>,
    /// The inserted medium's URL.
    pub media: Option<String>,
}

impl MemoryMachine {
    /// A machine with this hardware, powered off.
    pub fn new(inventory: Inventory) -> MemoryMachine {
        MemoryMachine {
            inventory,
            state: Mutex::default(),
        }
    }

    /// What it went through so far.
    pub fn state(&self) -> MemoryState {
        lock(&self.state).clone()
    }
}

impl Machine for MemoryMachine {
    fn power_on(&self) -> bool {
        lock(&self.state).on
    }

    fn reset(&self, reset: &str, boot: &Boot) -> Result<(), String> {
        let mut s = lock(&self.state);
        s.resets.push(reset.to_owned());
        let on = !matches!(reset, "ForceOff" | "GracefulShutdown");
        if on {
            s.booted_with = Some(boot.clone());
        }
        s.on = on;
        Ok(())
    }

    fn boot_changed(&self, _: &Boot) -> Result<(), String> {
        Ok(())
    }

    fn insert_media(&self, url: &str) -> Result<(), String> {
        lock(&self.state).media = Some(url.to_owned());
        Ok(())
    }

    fn eject_media(&self) -> Result<(), String> {
        lock(&self.state).media = None;
        Ok(())
    }

    fn inventory(&self) -> Inventory {
        self.inventory.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_decode() {
        assert_eq!(
            base64_decode("YWRtaW46cGFzc3dvcmQ=").as_deref(),
            Some("admin:password")
        );
        assert_eq!(base64_decode("!!"), None);
    }

    #[test]
    fn now_is_rfc3339_and_parses_back() {
        let t = now_text();
        let s = crate::client::parse_time(&t).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((now - s).abs() <= 2, "{t}");
    }
}

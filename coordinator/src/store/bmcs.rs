//! Bare-metal nodes' BMCs: address, credentials, the agent that drives them, power seen and
//! expected.

use super::{Store, StoreError};
use crate::model::{BootVia, EfiLoader, UnknownName};
use ferric_proto::hardware::BootMode;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

const BAREMETAL: &str = crate::model::NodeRole::Baremetal.as_str();

/// A bare-metal node's BMC as stored (its password sealed, see [`crate::secrets`]; skipped
/// when serialized).
#[derive(Debug, Clone, Serialize)]
pub struct BmcRow {
    /// The bare-metal node.
    pub node: String,
    /// `ipmi://USER@HOST:PORT`.
    pub address: String,
    /// Password, sealed (or in clear from a store an older version wrote, until the start
    /// seals it).
    #[serde(skip)]
    pub sealed_password: String,
    /// Agent that drives the BMC.
    pub via: String,
    /// The node's NIC MAC addresses.
    pub macs: Vec<String>,
    /// Power state Ferric last set (`on`/`off`).
    pub power_expected: Option<String>,
    /// When that was confirmed, agent clock, ms since the epoch.
    pub expected_at_ms: Option<i64>,
    /// Power state last read (`on`/`off`).
    pub power_observed: Option<String>,
    /// When, agent clock, ms since the epoch.
    pub observed_at_ms: Option<i64>,
    /// The newest failed read's error (kept after the BMC answers again).
    pub last_error: Option<String>,
    /// When that read was, agent clock, ms since the epoch.
    pub error_at_ms: Option<i64>,
    /// What changed behind Ferric's back, until a power action clears it.
    pub flag: Option<String>,
    /// When it was flagged.
    pub flagged_at_ms: Option<i64>,
    /// The node's serial console log on the driving agent's host, if it has one.
    pub console_log: Option<String>,
    /// How its firmware boots.
    pub boot_mode: BootMode,
    /// When an inspection saw that mode (`None`: as enrolled or set).
    pub boot_mode_seen_at_ms: Option<i64>,
    /// The UEFI iPXE its firmware gets.
    pub efi_loader: EfiLoader,
    /// How it boots its deploy ramdisk.
    pub boot_via: BootVia,
}

/// `SELECT` of every column of `bmcs`, then the rest of the statement.
macro_rules! select_bmcs {
    ($rest:literal) => {
        concat!(
            "SELECT ",
            "node, address, password, via, macs, power_expected, expected_at_ms, power_observed, \
             observed_at_ms, last_error, error_at_ms, flag, flagged_at_ms, console_log, \
             boot_mode, boot_mode_seen_at_ms, efi_loader, boot_via",
            " FROM bmcs ",
            $rest
        )
    };
}

impl Store {
    fn bmc_row(r: &AnyRow) -> Result<BmcRow, StoreError> {
        Ok(BmcRow {
            node: r.try_get("node")?,
            address: r.try_get("address")?,
            sealed_password: r.try_get("password")?,
            via: r.try_get("via")?,
            macs: r
                .try_get::<String, _>("macs")?
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
            power_expected: r.try_get("power_expected")?,
            expected_at_ms: r.try_get("expected_at_ms")?,
            power_observed: r.try_get("power_observed")?,
            observed_at_ms: r.try_get("observed_at_ms")?,
            last_error: r.try_get("last_error")?,
            error_at_ms: r.try_get("error_at_ms")?,
            flag: r.try_get("flag")?,
            flagged_at_ms: r.try_get("flagged_at_ms")?,
            console_log: r.try_get("console_log")?,
            boot_mode: {
                let v: String = r.try_get("boot_mode")?;
                v.parse().map_err(|_| UnknownName {
                    what: "boot mode",
                    value: v,
                    known: "bios, uefi".into(),
                })?
            },
            boot_mode_seen_at_ms: r.try_get("boot_mode_seen_at_ms")?,
            efi_loader: r.try_get::<String, _>("efi_loader")?.parse()?,
            boot_via: r.try_get::<String, _>("boot_via")?.parse()?,
        })
    }

    /// Sets how `node` boots and which UEFI iPXE it gets (what is `None` stays); an operator's
    /// word, so a mode an inspection saw is not claimed for it. False: no such BMC node.
    pub async fn set_boot(
        &self,
        node: &str,
        mode: Option<BootMode>,
        loader: Option<EfiLoader>,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE bmcs SET boot_mode = COALESCE($1, boot_mode), \
             boot_mode_seen_at_ms = CASE WHEN $1 IS NULL OR $1 = boot_mode \
             THEN boot_mode_seen_at_ms ELSE NULL END, \
             efi_loader = COALESCE($2, efi_loader) WHERE node = $3",
        )
        .bind(mode.map(BootMode::as_str))
        .bind(loader.map(EfiLoader::as_str))
        .bind(node);
        Ok(self.run(q).await? == 1)
    }

    /// Sets how `node` boots its deploy ramdisk. False: no such BMC node.
    pub async fn set_boot_via(&self, node: &str, via: BootVia) -> Result<bool, StoreError> {
        let q = sqlx::query("UPDATE bmcs SET boot_via = $1 WHERE node = $2")
            .bind(via.as_str())
            .bind(node);
        Ok(self.run(q).await? == 1)
    }

    /// `node`'s network document (JSON), if one is set; `None` in the outer option: no such
    /// BMC node.
    pub async fn network_json(&self, node: &str) -> Result<Option<Option<String>>, StoreError> {
        let q = sqlx::query("SELECT network_json FROM bmcs WHERE node = $1").bind(node);
        self.fetch_row(q, |r| Ok(r.try_get::<Option<String>, _>(0)?))
            .await
    }

    /// Replaces `node`'s network document; false: no such BMC node.
    pub async fn set_network_json(
        &self,
        node: &str,
        json: Option<&str>,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query("UPDATE bmcs SET network_json = $1 WHERE node = $2")
            .bind(json)
            .bind(node);
        Ok(self.run(q).await? == 1)
    }

    /// Records the boot mode an inspection of `node` saw from its running firmware, at
    /// `at_ms`. Returns the mode stored before.
    pub async fn boot_mode_seen(
        &self,
        node: &str,
        mode: BootMode,
        at_ms: i64,
    ) -> Result<Option<BootMode>, StoreError> {
        let before = self.bmc(node).await?.map(|b| b.boot_mode);
        let q = sqlx::query(
            "UPDATE bmcs SET boot_mode = $1, boot_mode_seen_at_ms = $2 WHERE node = $3",
        )
        .bind(mode.as_str())
        .bind(at_ms)
        .bind(node);
        self.run(q).await?;
        Ok(before)
    }

    /// Replaces `node`'s stored password (sealing one kept in clear); false when it has no BMC.
    pub async fn set_bmc_password(&self, node: &str, sealed: &str) -> Result<bool, StoreError> {
        let q = sqlx::query("UPDATE bmcs SET password = $1 WHERE node = $2");
        Ok(self.run(q.bind(sealed).bind(node)).await? == 1)
    }

    /// Enrolls a bare-metal node with its BMC (password sealed), driven by the agent `via`.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_bmc_node(
        &self,
        node: &str,
        address: &str,
        sealed_password: &str,
        via: &str,
        macs: &[String],
        console_log: Option<&str>,
        boot: (BootMode, EfiLoader),
        project: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with(self.backend.begin_write()).await?;
        // The name must be free and `via` an agent's node in the same project.
        let found = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM nodes WHERE name = $1), \
             (SELECT COUNT(*) FROM nodes WHERE name = $2 AND role <> $3 AND project = $4)",
        )
        .bind(node)
        .bind(via)
        .bind(BAREMETAL)
        .bind(project)
        .fetch_one(&mut *tx)
        .await?;
        let refused = if found.try_get::<i64, _>(0)? > 0 {
            Some(StoreError::NodeExists(node.to_owned()))
        } else if found.try_get::<i64, _>(1)? == 0 {
            Some(StoreError::UnknownNode(via.to_owned()))
        } else {
            None
        };
        let refused = match refused {
            Some(e) => Some(e),
            None => Self::mac_holder(&mut tx, macs).await?,
        };
        if let Some(e) = refused {
            tx.rollback().await?;
            return Err(e);
        }
        sqlx::query(
            "INSERT INTO nodes (name, role, enrolled_at_ms, provision_state, project, cert_generation) \
             VALUES ($1, $2, $3, $4, $5, COALESCE((SELECT cert_generation FROM retired_nodes WHERE name = $1), 0))",
        )
        .bind(node)
        .bind(BAREMETAL)
        .bind(now_ms)
        .bind(crate::model::ProvisionState::Enroll.as_str())
        .bind(project)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO bmcs (node, address, password, via, macs, console_log, boot_mode, efi_loader) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(node)
        .bind(address)
        .bind(sealed_password)
        .bind(via)
        .bind(macs.join(","))
        .bind(console_log)
        .bind(boot.0.as_str())
        .bind(boot.1.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The first of `macs` another node has (enrolled by its BMC, or discovered), as the
    /// refusal; read in the caller's write transaction, so two enrollments cannot both take a
    /// MAC.
    pub(super) async fn mac_holder(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        macs: &[String],
    ) -> Result<Option<StoreError>, StoreError> {
        if macs.is_empty() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT bmcs.node, bmcs.macs, nodes.project FROM bmcs JOIN nodes ON nodes.name = bmcs.node \
             UNION ALL SELECT discovered_macs.node, discovered_macs.mac, nodes.project \
             FROM discovered_macs JOIN nodes ON nodes.name = discovered_macs.node",
        )
        .fetch_all(&mut **tx)
        .await?;
        for r in &rows {
            let held: String = r.try_get(1)?;
            if let Some(mac) = macs
                .iter()
                .find(|m| held.split(',').any(|h| h.eq_ignore_ascii_case(m)))
            {
                return Ok(Some(StoreError::MacTaken {
                    mac: mac.clone(),
                    node: r.try_get(0)?,
                    project: r.try_get(2)?,
                }));
            }
        }
        Ok(None)
    }

    /// One node's BMC.
    pub async fn bmc(&self, node: &str) -> Result<Option<BmcRow>, StoreError> {
        let q = sqlx::query(select_bmcs!("WHERE node = $1"));
        self.fetch_row(q.bind(node), Self::bmc_row).await
    }

    /// Every BMC (of one driving agent, when given), by node name.
    pub async fn bmcs(&self, via: Option<&str>) -> Result<Vec<BmcRow>, StoreError> {
        let q = match via {
            Some(v) => sqlx::query(select_bmcs!("WHERE via = $1 ORDER BY node")).bind(v),
            None => sqlx::query(select_bmcs!("ORDER BY node")),
        };
        self.fetch_rows(q, Self::bmc_row).await
    }

    /// Records the power state a Ferric power action left (confirmed by the agent at `at_ms`)
    /// and clears any flag.
    pub async fn bmc_power_set(&self, node: &str, on: bool, at_ms: i64) -> Result<(), StoreError> {
        let p = if on { "on" } else { "off" };
        let q = sqlx::query(
            "UPDATE bmcs SET power_expected = $1, expected_at_ms = $2, power_observed = $1, \
             observed_at_ms = $2, flag = NULL, flagged_at_ms = NULL WHERE node = $3",
        )
        .bind(p)
        .bind(at_ms)
        .bind(node);
        self.run(q).await?;
        Ok(())
    }

    /// Records what a poll saw. Returns the new flag when the power differs from what Ferric
    /// set (an observation older than Ferric's last action is stale, and one made while a
    /// power plan is `busy` is in flux: both are only recorded). The first observation of a
    /// node becomes what Ferric expects.
    pub async fn bmc_observed(
        &self,
        node: &str,
        busy: bool,
        power_on: Option<bool>,
        error: Option<&str>,
        at_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.pool.begin_with(self.backend.begin_write()).await?;
        let row = sqlx::query(select_bmcs!("WHERE node = $1"))
            .bind(node)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row.as_ref().map(Self::bmc_row).transpose()? else {
            tx.rollback().await?;
            return Ok(None);
        };
        if row
            .observed_at_ms
            .max(row.error_at_ms)
            .is_some_and(|t| t > at_ms)
        {
            tx.rollback().await?;
            return Ok(None);
        }
        let seen = power_on.map(|on| if on { "on" } else { "off" });
        let mut flag = None;
        let mut expected = row.power_expected.clone();
        if let Some(seen) = seen {
            match &row.power_expected {
                None => expected = Some(seen.to_owned()),
                Some(e)
                    if !busy
                        && e != seen
                        && row.flag.is_none()
                        && row.expected_at_ms.is_none_or(|t| at_ms > t) =>
                {
                    flag = Some(format!(
                        "power changed behind Ferric's back: Ferric left it {e}, the BMC reports {seen}"
                    ));
                }
                _ => {}
            }
        }
        // A read whose power failed keeps the last power read and its time; its error and
        // time are kept apart, so that the view can tell "failing now" from "failed once".
        sqlx::query(
            "UPDATE bmcs SET power_observed = COALESCE($1, power_observed), \
             observed_at_ms = CASE WHEN $1 IS NULL THEN observed_at_ms ELSE $2 END, \
             last_error = COALESCE($3, last_error), \
             error_at_ms = CASE WHEN $3 IS NULL THEN error_at_ms ELSE $2 END, \
             power_expected = $4, flag = COALESCE($5, flag), \
             flagged_at_ms = COALESCE($6, flagged_at_ms) WHERE node = $7",
        )
        .bind(seen)
        .bind(at_ms)
        .bind(error)
        .bind(expected)
        .bind(flag.clone())
        .bind(flag.as_ref().map(|_| at_ms))
        .bind(node)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(flag)
    }
}

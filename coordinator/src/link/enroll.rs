//! Enrollment (`ferric-enroll/1`): server-authenticated TLS only, one request, one answer.

use crate::Shared;
use ferric_proto::close;
use ferric_proto::frame::to_frame;
use ferric_proto::msg::{EnrollRequest, EnrollResponse};
use std::time::Duration;
use tracing::{info, warn};

/// Largest enrollment message accepted (a CSR is well under 4 KiB).
const MAX_ENROLL_FRAME: usize = 16 * 1024;

/// Serves an enrollment connection: one request, one answer.
pub(super) async fn serve(conn: quinn::Connection, shared: &Shared) {
    let stream = tokio::time::timeout(shared.config.handshake_timeout, conn.accept_bi()).await;
    let Ok(Ok((mut send, mut recv))) = stream else {
        conn.close(close::HANDSHAKE_TIMEOUT.into(), b"no enrollment request");
        return;
    };
    let req = match tokio::time::timeout(
        shared.config.handshake_timeout,
        super::read_one::<EnrollRequest>(&mut recv, MAX_ENROLL_FRAME),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            warn!(error = %e, "bad enrollment request");
            conn.close(
                close::PROTOCOL_ERROR.into(),
                format!("malformed enrollment request: {e}").as_bytes(),
            );
            return;
        }
        Err(_) => {
            conn.close(
                close::HANDSHAKE_TIMEOUT.into(),
                b"enrollment request timed out",
            );
            return;
        }
    };
    let response = match crate::conductor::nodes::enroll(
        shared,
        &req,
        conn.remote_address().ip().to_canonical(),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %crate::error_chain(&e), "enrollment failed in the store");
            conn.close(
                close::STORE_ERROR.into(),
                b"coordinator store error; retry later",
            );
            return;
        }
    };
    match &response {
        EnrollResponse::Enrolled { .. } => {
            info!(node = %req.node, role = req.role.as_str(), "node enrolled")
        }
        EnrollResponse::Refused(r) => warn!(node = %req.node, reason = %r, "enrollment refused"),
    }
    if let Ok(frame) = to_frame(&response, MAX_ENROLL_FRAME) {
        let _ = send.write_all(&frame).await;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
    }
    conn.close(close::ENROLL_DONE.into(), b"enrollment done");
}

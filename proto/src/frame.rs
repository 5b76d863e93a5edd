//! Length-prefixed binary framing.
//!
//! A frame is a 4-byte big-endian payload length followed by the payload, a message encoded
//! with postcard. Every decoder has a size limit and answers bad bytes with an error that names
//! the problem, never a panic. Datagrams carry one postcard message without a length prefix.

use serde::{Serialize, de::DeserializeOwned};

/// Default limit on a frame's payload (1 MiB): a plan of the maximum step count fits easily.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;
/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

/// A frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header announces more bytes than the limit allows.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced payload length.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// A frame with an empty payload.
    #[error("frame has an empty payload")]
    Empty,
    /// The payload names a message kind this version does not know.
    #[error("unknown message kind {kind} (newest known is {known}); peer speaks a newer protocol")]
    UnknownKind {
        /// Kind number read.
        kind: u32,
        /// Highest kind known.
        known: u32,
    },
    /// The payload is not a valid message.
    #[error("malformed {what} message: {reason}")]
    Malformed {
        /// Message type expected.
        what: &'static str,
        /// Decoder's reason.
        reason: String,
    },
    /// Bytes left after the message inside one frame.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({0} bytes buffered)")]
    Truncated(usize),
}

/// A message type that can be framed. `KINDS` is the number of variants of the top-level enum,
/// used to tell an unknown message kind from garbage.
pub trait Message: Serialize + DeserializeOwned {
    /// Name for errors.
    const NAME: &'static str;
    /// Number of top-level variants (kinds) this version knows.
    const KINDS: u32;
}

impl Message for crate::msg::AgentMsg {
    const NAME: &'static str = "agent";
    const KINDS: u32 = 3;
}
impl Message for crate::msg::CoordMsg {
    const NAME: &'static str = "coordinator";
    const KINDS: u32 = 4;
}
impl Message for crate::msg::EnrollRequest {
    const NAME: &'static str = "enroll request";
    const KINDS: u32 = u32::MAX;
}
impl Message for crate::msg::EnrollResponse {
    const NAME: &'static str = "enroll response";
    const KINDS: u32 = 2;
}
impl Message for crate::msg::TelemetrySample {
    const NAME: &'static str = "telemetry";
    const KINDS: u32 = u32::MAX;
}

/// Encodes `msg` as one frame appended to `out`.
///
/// # Errors
/// [`FrameError::TooLarge`] when the payload exceeds `max`.
pub fn encode<M: Message>(msg: &M, max: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let mut out2 = std::mem::take(out);
    out2 = postcard::to_extend(msg, out2).map_err(|e| FrameError::Malformed {
        what: M::NAME,
        reason: e.to_string(),
    })?;
    *out = out2;
    let len = out.len() - start - HEADER_LEN;
    if len > max {
        out.truncate(start);
        return Err(FrameError::TooLarge { len, max });
    }
    let len32 = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max })?;
    out[start..start + HEADER_LEN].copy_from_slice(&len32.to_be_bytes());
    Ok(())
}

/// Encodes `msg` into a new frame.
pub fn to_frame<M: Message>(msg: &M, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode(msg, max, &mut out)?;
    Ok(out)
}

/// Decodes one message from a payload (no header). Used for frames and datagrams.
pub fn decode_payload<M: Message>(payload: &[u8]) -> Result<M, FrameError> {
    if payload.is_empty() {
        return Err(FrameError::Empty);
    }
    match postcard::take_from_bytes::<M>(payload) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(FrameError::Trailing(rest.len())),
        Err(e) => {
            // An enum is encoded as its variant index (a varint) first: name an unknown kind
            // clearly instead of calling it garbage.
            if let Ok((kind, _)) = postcard::take_from_bytes::<u32>(payload)
                && kind >= M::KINDS
            {
                return Err(FrameError::UnknownKind {
                    kind,
                    known: M::KINDS - 1,
                });
            }
            Err(FrameError::Malformed {
                what: M::NAME,
                reason: e.to_string(),
            })
        }
    }
}

/// Encodes a datagram (no header).
pub fn to_datagram<M: Message>(msg: &M) -> Result<Vec<u8>, FrameError> {
    postcard::to_stdvec(msg).map_err(|e| FrameError::Malformed {
        what: M::NAME,
        reason: e.to_string(),
    })
}

/// Incremental frame decoder for a byte stream. Feed bytes with [`FrameDecoder::extend`], take
/// messages with [`FrameDecoder::next_msg`]. After an error the stream is unusable: close it.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: usize,
}

impl FrameDecoder {
    /// A decoder refusing payloads over `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_msg<M: Message>(&mut self) -> Result<Option<M>, FrameError> {
        let Some(header) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; HEADER_LEN];
        len_bytes.copy_from_slice(header);
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        let Some(payload) = self.buf.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let msg = decode_payload::<M>(payload);
        self.buf.drain(..HEADER_LEN + len);
        msg.map(Some)
    }

    /// Call at end of stream: an error if a partial frame is left.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated(self.buf.len()))
        }
    }

    /// How many more bytes are needed before [`FrameDecoder::next_msg`] can return a message
    /// (at least 1 while a frame is incomplete); 0 when one may be ready.
    pub fn wanted(&self) -> usize {
        if self.buf.len() < HEADER_LEN {
            return HEADER_LEN - self.buf.len();
        }
        let mut len_bytes = [0u8; HEADER_LEN];
        len_bytes.copy_from_slice(&self.buf[..HEADER_LEN]);
        let len = (u32::from_be_bytes(len_bytes) as usize).min(self.max);
        (HEADER_LEN + len).saturating_sub(self.buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{AgentMsg, CoordMsg};
    use crate::plan::{ErrorKind, StepEvent, StepEventKind};

    #[test]
    fn roundtrip_and_split_delivery() {
        let msg = AgentMsg::Event(StepEvent {
            plan: 7,
            seq: 3,
            step: 1,
            at_ms: 99,
            kind: StepEventKind::Failed {
                kind: ErrorKind::Timeout,
                message: "slow".into(),
            },
        });
        let frame = to_frame(&msg, DEFAULT_MAX_FRAME).unwrap();
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        for b in &frame {
            assert_eq!(dec.next_msg::<AgentMsg>().unwrap(), None);
            dec.extend(std::slice::from_ref(b));
        }
        assert_eq!(dec.next_msg::<AgentMsg>().unwrap(), Some(msg));
        dec.finish().unwrap();
    }

    /// Postcard is not self-describing: a field skipped when empty would shift every byte
    /// after it. The deploy steps, with hints partly given, come back as they went.
    #[test]
    fn the_deploy_steps_roundtrip_as_a_pushed_plan() {
        use crate::msg::CoordMsg;
        use crate::plan::{
            BootDevice, ConfigFile, EraseMode, Plan, PlanStep, RootHint, Step, VolumeImage,
        };
        let root = RootHint {
            name: None,
            serial: Some("S1".into()),
            wwn: None,
            min_size_bytes: Some(1 << 30),
        };
        let steps = [
            Step::EraseDisks {
                mode: EraseMode::Zero,
            },
            Step::WriteImage {
                image: VolumeImage {
                    url: "http://10.0.0.1:8080/images/sha256/ab".into(),
                    checksum: format!("sha256:{}", "a".repeat(64)),
                    format: Some("qcow2".into()),
                },
                root: root.clone(),
            },
            Step::WriteConfigDrive {
                root: RootHint::default(),
                label: "cidata".into(),
                files: vec![ConfigFile {
                    path: "meta-data".into(),
                    content: "local-hostname: n1\n".into(),
                }],
            },
            Step::SetBootDevice {
                device: BootDevice::Disk,
                persistent: true,
            },
            Step::Reboot {},
        ];
        let msg = CoordMsg::Plan(Plan {
            id: 9,
            node: "n1".into(),
            steps: steps
                .into_iter()
                .enumerate()
                .map(|(i, step)| PlanStep {
                    key: format!("s{i}"),
                    timeout_secs: 60,
                    step,
                })
                .collect(),
        });
        let frame = to_frame(&msg, DEFAULT_MAX_FRAME).unwrap();
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        dec.extend(&frame);
        assert_eq!(dec.next_msg::<CoordMsg>().unwrap(), Some(msg));
    }

    #[test]
    fn oversized_frame_is_refused_before_buffering() {
        let mut dec = FrameDecoder::new(1024);
        dec.extend(&(4096u32).to_be_bytes());
        assert_eq!(
            dec.next_msg::<AgentMsg>(),
            Err(FrameError::TooLarge {
                len: 4096,
                max: 1024
            })
        );
    }

    #[test]
    fn unknown_kind_is_named() {
        let mut dec = FrameDecoder::new(1024);
        dec.extend(&[0, 0, 0, 2, 9, 0]);
        let err = dec.next_msg::<CoordMsg>().unwrap_err();
        assert_eq!(err, FrameError::UnknownKind { kind: 9, known: 3 });
        assert!(err.to_string().contains("newer protocol"));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let mut dec = FrameDecoder::new(1024);
        dec.extend(&[0, 0, 0, 3, 0, 0xff, 0xff]);
        assert!(matches!(
            dec.next_msg::<AgentMsg>(),
            Err(FrameError::Malformed { .. })
        ));
        let mut dec = FrameDecoder::new(1024);
        dec.extend(&[0, 0, 0, 0]);
        assert_eq!(dec.next_msg::<AgentMsg>(), Err(FrameError::Empty));
    }

    #[test]
    fn truncated_stream_is_reported() {
        let frame = to_frame(&AgentMsg::PlanAccepted { plan: 1 }, 1024).unwrap();
        let mut dec = FrameDecoder::new(1024);
        dec.extend(&frame[..frame.len() - 1]);
        assert_eq!(dec.next_msg::<AgentMsg>().unwrap(), None);
        assert_eq!(dec.finish(), Err(FrameError::Truncated(frame.len() - 1)));
    }
}

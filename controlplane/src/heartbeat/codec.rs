//! Framing: a 4-byte big-endian length, then that many bytes of JSON.
//!
//! [`FrameCodec`] wraps tokio-util's [`LengthDelimitedCodec`] with a maximum
//! frame length, so a peer can never make the gateway buffer more than one
//! frame of that size: an over-long length prefix is an error before any of
//! the body is read. The body is decoded in two steps: the envelope
//! (`version`, `type`) first, so an unknown version or message type gets its
//! own error (and error frame) instead of a generic parse failure.

use super::protocol::{ErrorCode, WireMessage, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};
use std::io;
use std::marker::PhantomData;
use tokio_util::bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec, LengthDelimitedCodecError};

/// The default maximum frame body, in bytes: a Hello with dozens of
/// interfaces and users is a few KiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024;

/// A frame the peer sent that is not a message this side accepts.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The envelope's `version` is missing or not [`PROTOCOL_VERSION`].
    #[error("unsupported protocol version {0:?}: this gateway speaks version {PROTOCOL_VERSION}; upgrade or downgrade the agent")]
    UnsupportedVersion(Option<u64>),
    /// The envelope's `type` is missing or unknown.
    #[error("unknown message type {0:?}: send one of the types in docs/heartbeat-protocol.md")]
    UnknownType(Option<String>),
    /// Not JSON, not an object, or a known type with missing or wrong fields.
    #[error("malformed message: {0}: fix the JSON to match docs/heartbeat-protocol.md")]
    Malformed(String),
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The connection failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// A length prefix over the limit.
    #[error("frame longer than {max} bytes: send smaller messages (the limit is the gateway's max_frame_len)")]
    FrameTooLarge {
        /// The limit.
        max: usize,
    },
    /// A well-framed body that is not an acceptable message.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A message this side could not serialize.
    #[error("cannot encode message: {0}")]
    Encode(#[from] serde_json::Error),
}

impl CodecError {
    /// The error code to send before closing, when the peer is to blame.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            CodecError::Io(_) | CodecError::Encode(_) => None,
            CodecError::FrameTooLarge { .. } => Some(ErrorCode::FrameTooLarge),
            CodecError::Protocol(ProtocolError::UnsupportedVersion(_)) => Some(ErrorCode::UnsupportedVersion),
            CodecError::Protocol(ProtocolError::UnknownType(_)) => Some(ErrorCode::UnknownMessage),
            CodecError::Protocol(ProtocolError::Malformed(_)) => Some(ErrorCode::Malformed),
        }
    }
}

/// A frame body already encoded (one list sent to many sessions is encoded once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded(pub Bytes);

/// Decodes frames into `In` messages and encodes `Out` messages into frames.
#[derive(Debug)]
pub struct FrameCodec<In, Out> {
    frames: LengthDelimitedCodec,
    max: usize,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> FrameCodec<In, Out> {
    /// A codec refusing frames over `max_frame_len` bytes (either way).
    pub fn new(max_frame_len: usize) -> Self {
        let frames = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .big_endian()
            .max_frame_length(max_frame_len)
            .new_codec();
        FrameCodec { frames, max: max_frame_len, _types: PhantomData }
    }
}

#[derive(Serialize)]
struct Envelope<'a, M> {
    version: u32,
    #[serde(flatten)]
    message: &'a M,
}

#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    version: Option<serde_json::Value>,
    #[serde(rename = "type", default)]
    kind: Option<serde_json::Value>,
}

/// Encodes one message as a frame body (envelope included).
pub fn encode_body<M: Serialize>(message: &M) -> Result<Bytes, serde_json::Error> {
    serde_json::to_vec(&Envelope { version: PROTOCOL_VERSION, message }).map(Bytes::from)
}

/// Decodes one frame body: envelope first, then the message.
pub fn decode_body<M: WireMessage>(body: &[u8]) -> Result<M, ProtocolError> {
    // serde would read a struct from a JSON array too; the envelope is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ProtocolError::Malformed("the frame body is not a JSON object".into()));
    }
    let head: Head = serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let version = head.version.as_ref().and_then(|v| v.as_u64());
    if version != Some(u64::from(PROTOCOL_VERSION)) {
        return Err(ProtocolError::UnsupportedVersion(version));
    }
    let kind = head.kind.as_ref().and_then(|k| k.as_str());
    match kind {
        Some(k) if M::known_types().contains(&k) => {}
        _ => return Err(ProtocolError::UnknownType(kind.map(|k| k.chars().take(64).collect()))),
    }
    serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

impl<In, Out> FrameCodec<In, Out> {
    fn frame_error(&self, e: io::Error) -> CodecError {
        if e.get_ref().is_some_and(|inner| inner.is::<LengthDelimitedCodecError>()) {
            CodecError::FrameTooLarge { max: self.max }
        } else {
            CodecError::Io(e)
        }
    }
}

impl<In: WireMessage, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        match self.frames.decode(src) {
            Ok(Some(frame)) => Ok(Some(decode_body(&frame)?)),
            Ok(None) => Ok(None),
            Err(e) => Err(self.frame_error(e)),
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for FrameCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        let body = encode_body(&item)?;
        self.frames.encode(body, dst).map_err(|e| self.frame_error(e))
    }
}

impl<In, Out> Encoder<Encoded> for FrameCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, item: Encoded, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.frames.encode(item.0, dst).map_err(|e| self.frame_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::super::protocol::{EndpointMessage, GatewayMessage, ReportedHealth};
    use super::*;

    /// A heartbeat frame, byte for byte: `printf '\0\0\0\x2f{"version":1,"type":"heartbeat","health":"red"}'`.
    static HEARTBEAT_FRAME: &[u8] = b"\x00\x00\x00\x2f{\"version\":1,\"type\":\"heartbeat\",\"health\":\"red\"}";

    type Server = FrameCodec<EndpointMessage, GatewayMessage>;

    #[test]
    fn decodes_a_fixture_frame_and_waits_for_partial_ones() {
        let mut c = Server::new(1024);
        let mut buf = BytesMut::from(&HEARTBEAT_FRAME[..10]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&HEARTBEAT_FRAME[10..]);
        let m = c.decode(&mut buf).unwrap().unwrap();
        assert_eq!(m, EndpointMessage::Heartbeat { health: ReportedHealth::Red });
        assert!(buf.is_empty());
    }

    #[test]
    fn encodes_with_envelope_and_round_trips() {
        let mut client = FrameCodec::<GatewayMessage, EndpointMessage>::new(1024);
        let mut buf = BytesMut::new();
        client.encode(EndpointMessage::Heartbeat { health: ReportedHealth::Red }, &mut buf).unwrap();
        assert_eq!(&buf[..], HEARTBEAT_FRAME);
        let mut server = Server::new(1024);
        let mut out = BytesMut::new();
        server
            .encode(GatewayMessage::Welcome { heartbeat_interval_ms: 15000, gateway: "gw".into(), endpoint_id: 7 }, &mut out)
            .unwrap();
        let back = client.decode(&mut out).unwrap().unwrap();
        assert!(matches!(back, GatewayMessage::Welcome { endpoint_id: 7, .. }));
    }

    #[test]
    fn rejects_oversize_before_reading_the_body() {
        let mut c = Server::new(100);
        let mut buf = BytesMut::from(&[0u8, 0, 0x10, 0][..]); // 4096 bytes announced
        let err = c.decode(&mut buf).unwrap_err();
        assert!(matches!(err, CodecError::FrameTooLarge { max: 100 }), "{err}");
        assert_eq!(err.code(), Some(ErrorCode::FrameTooLarge));
    }

    fn body_err(body: &str) -> ProtocolError {
        decode_body::<EndpointMessage>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn classifies_bad_bodies() {
        assert!(matches!(body_err(r#"{"version":2,"type":"heartbeat","health":"red"}"#), ProtocolError::UnsupportedVersion(Some(2))));
        assert!(matches!(body_err(r#"{"type":"heartbeat","health":"red"}"#), ProtocolError::UnsupportedVersion(None)));
        assert!(matches!(body_err(r#"{"version":1,"type":"reboot"}"#), ProtocolError::UnknownType(Some(_))));
        assert!(matches!(body_err(r#"{"version":1,"type":"welcome"}"#), ProtocolError::UnknownType(_)), "a gateway message from an endpoint");
        assert!(matches!(body_err(r#"{"version":1}"#), ProtocolError::UnknownType(None)));
        assert!(matches!(body_err(r#"{"version":1,"type":"heartbeat","health":"purple"}"#), ProtocolError::Malformed(_)));
        assert!(matches!(body_err("\u{1}\u{2}garbage"), ProtocolError::Malformed(_)));
        assert!(matches!(body_err("[1,2]"), ProtocolError::Malformed(_)));
        // Unknown fields are ignored (forward compatible within a version).
        let ok = decode_body::<EndpointMessage>(br#"{"version":1,"type":"heartbeat","health":"green","battery":80}"#).unwrap();
        assert_eq!(ok, EndpointMessage::Heartbeat { health: ReportedHealth::Green });
    }

    #[test]
    fn protocol_errors_are_one_line_with_a_fix() {
        for e in [body_err(r#"{"version":9,"type":"x"}"#), body_err(r#"{"version":1,"type":"x"}"#), body_err("nope")] {
            let s = e.to_string();
            assert!(!s.contains('\n') && s.contains("docs/heartbeat-protocol.md") || s.contains("upgrade"), "{s}");
        }
    }
}

//! The Security Heartbeat messages, as they travel inside frames.
//!
//! Every frame body is one JSON object with two envelope fields, `version`
//! (a number, [`PROTOCOL_VERSION`]) and `type` (the message's snake_case
//! name), beside the message's own fields. Fields a receiver does not know
//! are ignored, so a version can grow optional fields; anything that changes
//! the meaning of a message needs a new version. `docs/heartbeat-protocol.md`
//! is the reference for agent implementers.

use hbgw_shared::endpoint::{EndpointHealth, EndpointInterface, MacAddr};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// The one protocol version this gateway speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The health an endpoint can report itself: a heartbeat colour.
///
/// `Missing` and `NoHeartbeat` are the gateway's conclusions, never reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportedHealth {
    /// No active threats, protection working.
    Green,
    /// Warning: a PUA, inactive malware, or old signatures.
    Yellow,
    /// At risk: active malware not removed, or protection not working.
    Red,
}

impl From<ReportedHealth> for EndpointHealth {
    fn from(h: ReportedHealth) -> Self {
        match h {
            ReportedHealth::Green => EndpointHealth::Green,
            ReportedHealth::Yellow => EndpointHealth::Yellow,
            ReportedHealth::Red => EndpointHealth::Red,
        }
    }
}

impl fmt::Display for ReportedHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        EndpointHealth::from(*self).fmt(f)
    }
}

/// A user account as an endpoint reports it: the sign-in domain (NetBIOS or
/// DNS name; empty or the endpoint's own name for a local account) and the
/// account name. Never a password.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserAccount {
    /// The domain; empty for a local account.
    #[serde(default)]
    pub domain: String,
    /// The account name (sAMAccountName).
    pub user: String,
}

impl fmt::Display for UserAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.domain.is_empty() {
            f.write_str(&self.user)
        } else {
            write!(f, "{}\\{}", self.domain, self.user)
        }
    }
}

/// The first message of a session, endpoint -> gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The agent's own identifier (for example its Central endpoint id).
    /// Informational: the gateway names the endpoint by its certificate.
    pub endpoint_id: String,
    /// The computer's name.
    pub name: String,
    /// Its health now.
    pub health: ReportedHealth,
    /// Its network interfaces: MAC and addresses.
    #[serde(default)]
    pub interfaces: Vec<EndpointInterface>,
    /// Users signed in now.
    #[serde(default)]
    pub users: Vec<UserAccount>,
}

/// A flow's 5-tuple, as the gateway saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flow {
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP).
    pub protocol: u8,
    /// Source address.
    pub src_ip: IpAddr,
    /// Source port (0 when the protocol has none).
    pub src_port: u16,
    /// Destination address.
    pub dst_ip: IpAddr,
    /// Destination port (0 when the protocol has none).
    pub dst_port: u16,
}

/// An endpoint's answer to an [`GatewayMessage::IocQuery`]: who on the
/// endpoint owned the flow. Every field is `None` when the endpoint does not
/// know the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IocAnswer {
    /// The query this answers.
    pub query_id: u64,
    /// The endpoint's host name.
    #[serde(default)]
    pub host: Option<String>,
    /// The user that owned the process.
    #[serde(default)]
    pub user: Option<String>,
    /// The process (path or image name).
    #[serde(default)]
    pub process: Option<String>,
}

/// Messages an endpoint sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EndpointMessage {
    /// First message: who and how the endpoint is.
    Hello(Hello),
    /// Every heartbeat interval: the endpoint's health.
    Heartbeat {
        /// Health now.
        health: ReportedHealth,
    },
    /// Sent at once when the health changes.
    HealthChange {
        /// The new health.
        health: ReportedHealth,
        /// Why, for the logs (for example the threat's name).
        #[serde(default)]
        reason: Option<String>,
    },
    /// A user signed in.
    SignIn(UserAccount),
    /// A user signed out.
    SignOut(UserAccount),
    /// The answer to an IoC query.
    IocAnswer(IocAnswer),
}

impl EndpointMessage {
    /// The `type` values of this enum.
    pub const TYPES: &'static [&'static str] =
        &["hello", "heartbeat", "health_change", "sign_in", "sign_out", "ioc_answer"];

    /// This message's `type` value.
    pub fn type_name(&self) -> &'static str {
        match self {
            EndpointMessage::Hello(_) => "hello",
            EndpointMessage::Heartbeat { .. } => "heartbeat",
            EndpointMessage::HealthChange { .. } => "health_change",
            EndpointMessage::SignIn(_) => "sign_in",
            EndpointMessage::SignOut(_) => "sign_out",
            EndpointMessage::IocAnswer(_) => "ioc_answer",
        }
    }
}

/// One endpoint in an [`GatewayMessage::EndpointList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedEndpoint {
    /// Its MACs and addresses.
    pub interfaces: Vec<EndpointInterface>,
    /// Its health (yellow or red).
    pub health: EndpointHealth,
}

impl ListedEndpoint {
    /// Whether `mac` is one of this endpoint's.
    pub fn has_mac(&self, mac: MacAddr) -> bool {
        self.interfaces.iter().any(|i| i.mac == mac)
    }
}

/// Why the gateway closes a session; sent in [`GatewayMessage::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame's `version` is not one the gateway speaks.
    UnsupportedVersion,
    /// The frame's `type` is not an endpoint message.
    UnknownMessage,
    /// The frame is not valid JSON or misses fields.
    Malformed,
    /// The frame is longer than the gateway accepts.
    FrameTooLarge,
    /// The first message was not `hello`.
    HelloExpected,
    /// No `hello` arrived in time.
    HelloTimeout,
    /// No message arrived for too long.
    IdleTimeout,
    /// The endpoint's certificate was removed from the gateway.
    CertificateRevoked,
    /// A newer session of the same endpoint replaced this one.
    Replaced,
    /// The gateway is stopping.
    ShuttingDown,
}

impl ErrorCode {
    /// The snake_case name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownMessage => "unknown_message",
            ErrorCode::Malformed => "malformed",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::HelloExpected => "hello_expected",
            ErrorCode::HelloTimeout => "hello_timeout",
            ErrorCode::IdleTimeout => "idle_timeout",
            ErrorCode::CertificateRevoked => "certificate_revoked",
            ErrorCode::Replaced => "replaced",
            ErrorCode::ShuttingDown => "shutting_down",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Messages the gateway sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GatewayMessage {
    /// The answer to `hello`.
    Welcome {
        /// How often to send `heartbeat`, in milliseconds.
        heartbeat_interval_ms: u64,
        /// The gateway's name.
        gateway: String,
        /// The id the gateway gave this endpoint (from its certificate).
        endpoint_id: u64,
    },
    /// The endpoints that are red or yellow now (lateral movement protection).
    EndpointList {
        /// Counts up with every list this gateway sends.
        seq: u64,
        /// The red and yellow endpoints.
        endpoints: Vec<ListedEndpoint>,
    },
    /// Which process on the endpoint owned this flow?
    IocQuery {
        /// Echoed in the answer.
        query_id: u64,
        /// The flow.
        flow: Flow,
    },
    /// The session ends; the gateway closes the connection after this.
    Error {
        /// Why, machine-readable.
        code: ErrorCode,
        /// Why, for people.
        message: String,
    },
}

impl GatewayMessage {
    /// The `type` values of this enum.
    pub const TYPES: &'static [&'static str] = &["welcome", "endpoint_list", "ioc_query", "error"];
}

/// A message enum that travels in frames (see [`super::codec`]).
pub trait WireMessage: Serialize + serde::de::DeserializeOwned {
    /// Every `type` value the enum has.
    fn known_types() -> &'static [&'static str];
}

impl WireMessage for EndpointMessage {
    fn known_types() -> &'static [&'static str] {
        Self::TYPES
    }
}

impl WireMessage for GatewayMessage {
    fn known_types() -> &'static [&'static str] {
        Self::TYPES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_match_serde_tags() {
        let msgs = [
            EndpointMessage::Hello(Hello {
                endpoint_id: "x".into(),
                name: "pc".into(),
                health: ReportedHealth::Green,
                interfaces: vec![],
                users: vec![],
            }),
            EndpointMessage::Heartbeat { health: ReportedHealth::Red },
            EndpointMessage::HealthChange { health: ReportedHealth::Yellow, reason: None },
            EndpointMessage::SignIn(UserAccount { domain: "CORP".into(), user: "alice".into() }),
            EndpointMessage::SignOut(UserAccount { domain: "CORP".into(), user: "alice".into() }),
            EndpointMessage::IocAnswer(IocAnswer { query_id: 1, host: None, user: None, process: None }),
        ];
        for m in msgs {
            let v = serde_json::to_value(&m).unwrap();
            assert_eq!(v["type"], m.type_name());
            assert!(EndpointMessage::TYPES.contains(&m.type_name()));
        }
    }

    #[test]
    fn user_display_marks_domain() {
        assert_eq!(UserAccount { domain: "CORP".into(), user: "bob".into() }.to_string(), "CORP\\bob");
        assert_eq!(UserAccount { domain: String::new(), user: "bob".into() }.to_string(), "bob");
    }
}

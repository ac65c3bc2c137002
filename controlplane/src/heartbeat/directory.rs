//! Synchronized user ID: the signed-in domain user an endpoint reports is
//! checked in the directory, and the endpoint's addresses are bound to that
//! user (for logs and user-based rules).
//!
//! * Only domain accounts count: a sign-in with an empty domain, or with the
//!   endpoint's own computer name as domain (a local account), is ignored.
//! * No password ever crosses: the endpoint reports domain and account name,
//!   the gateway looks the account up with its own (service) credentials.
//! * [`UserDirectory`] is the lookup: [`FileDirectory`] (a TOML or JSON file
//!   listing domain users, for tests and the demo) and [`LdapDirectory`]
//!   (Active Directory / LDAP: `sAMAccountName` under a base DN).
//! * [`UserBindings`] maps IP -> user; with several users signed in on one
//!   endpoint (remote sessions), its addresses go to the latest one.

use super::protocol::UserAccount;
use hbgw_shared::endpoint::EndpointId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

/// An account as the directory knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryUser {
    /// The domain, as the directory spells it.
    pub domain: String,
    /// The account name (sAMAccountName).
    pub user: String,
    /// Display name, if known.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Whether the account is enabled; disabled accounts are not bound.
    #[serde(default = "enabled_default")]
    pub enabled: bool,
}

fn enabled_default() -> bool {
    true
}

/// A directory lookup that failed (as opposed to "no such user").
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The users file could not be read.
    #[error("cannot read users file {path}: {source}: check the path (heartbeat user directory)")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The users file did not parse.
    #[error("users file {path}: {detail}: write `[[users]]` entries with `domain` and `user` (TOML) or {{\"users\": [...]}} (JSON)")]
    Parse {
        /// The file.
        path: String,
        /// The parser's complaint.
        detail: String,
    },
    /// The LDAP server failed or refused.
    #[error("LDAP lookup failed: {0}: check the directory URL, bind DN and password")]
    Ldap(String),
    /// The lookup took too long.
    #[error("directory lookup timed out after {0:?}: check that the directory server is reachable")]
    Timeout(Duration),
}

/// The result of a directory lookup.
pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<DirectoryUser>, DirectoryError>> + Send + 'a>>;

/// Where domain accounts are checked.
pub trait UserDirectory: Send + Sync {
    /// Looks up `account`; `Ok(None)` when the directory has no such account.
    fn lookup<'a>(&'a self, account: &'a UserAccount) -> LookupFuture<'a>;

    /// One line naming the directory, for logs.
    fn describe(&self) -> String;
}

/// Whether a sign-in is a local (non-domain) account on `endpoint_name`.
pub fn is_local_account(account: &UserAccount, endpoint_name: &str) -> bool {
    let domain = account.domain.trim();
    domain.is_empty() || domain == "." || domain.eq_ignore_ascii_case(endpoint_name)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<DirectoryUser>,
}

/// A directory read from a file (TOML, or JSON when the name ends in `.json`):
///
/// ```toml
/// [[users]]
/// domain = "CORP"
/// user = "alice"
/// display_name = "Alice Example"   # optional
/// enabled = true                   # optional, default true
/// ```
///
/// Domains and account names match case-insensitively, as in Active Directory.
#[derive(Debug, Default)]
pub struct FileDirectory {
    users: HashMap<(String, String), DirectoryUser>,
}

impl FileDirectory {
    /// Reads the users file.
    pub fn load(path: &Path) -> Result<Self, DirectoryError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| DirectoryError::Read { path: path.display().to_string(), source })?;
        let parse_err = |detail: String| DirectoryError::Parse { path: path.display().to_string(), detail };
        let file: UsersFile = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
            serde_json::from_str(&text).map_err(|e| parse_err(e.to_string()))?
        } else {
            toml::from_str(&text).map_err(|e| parse_err(e.message().to_owned()))?
        };
        Ok(Self::from_users(file.users))
    }

    /// A directory holding `users`.
    pub fn from_users(users: impl IntoIterator<Item = DirectoryUser>) -> Self {
        let users = users.into_iter().map(|u| ((u.domain.to_lowercase(), u.user.to_lowercase()), u)).collect();
        FileDirectory { users }
    }

    /// Accounts held.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

impl UserDirectory for FileDirectory {
    fn lookup<'a>(&'a self, account: &'a UserAccount) -> LookupFuture<'a> {
        let found = self.users.get(&(account.domain.to_lowercase(), account.user.to_lowercase())).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn describe(&self) -> String {
        format!("users file ({} accounts)", self.users.len())
    }
}

/// How to reach an LDAP / Active Directory server.
#[derive(Debug, Clone)]
pub struct LdapDirectoryConfig {
    /// `ldap://host:389` or `ldaps://host:636`.
    pub url: String,
    /// Where accounts are searched (subtree), e.g. `DC=corp,DC=example,DC=com`.
    pub base_dn: String,
    /// The service account to bind as (`None`: anonymous).
    pub bind_dn: Option<String>,
    /// Its password (the gateway's own secret; never an endpoint user's).
    pub bind_password: Option<String>,
    /// Domains (NetBIOS or DNS names) this directory answers for; empty: all.
    pub domains: Vec<String>,
    /// Connection and operation timeout.
    pub timeout: Duration,
}

/// Active Directory / LDAP lookups by `sAMAccountName`. A connection per
/// lookup: sign-ins are rare next to heartbeats, and this keeps no state
/// that a directory restart could break.
#[derive(Debug)]
pub struct LdapDirectory {
    config: LdapDirectoryConfig,
}

/// `userAccountControl` bit for a disabled account.
const ACCOUNTDISABLE: i64 = 0x2;

impl LdapDirectory {
    /// A directory over `config`; nothing is contacted until the first lookup.
    pub fn new(config: LdapDirectoryConfig) -> Self {
        LdapDirectory { config }
    }

    async fn search(&self, account: &UserAccount) -> Result<Option<DirectoryUser>, ldap3::LdapError> {
        use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
        let settings = LdapConnSettings::new().set_conn_timeout(self.config.timeout);
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.config.url).await?;
        ldap3::drive!(conn);
        if let Some(dn) = &self.config.bind_dn {
            ldap.simple_bind(dn, self.config.bind_password.as_deref().unwrap_or("")).await?.success()?;
        }
        let filter = format!(
            "(&(objectCategory=person)(objectClass=user)(sAMAccountName={}))",
            ldap3::ldap_escape(account.user.as_str())
        );
        let (entries, _) = ldap
            .search(&self.config.base_dn, Scope::Subtree, &filter, vec!["sAMAccountName", "displayName", "userAccountControl"])
            .await?
            .success()?;
        let _ = ldap.unbind().await;
        let Some(entry) = entries.into_iter().next().map(SearchEntry::construct) else { return Ok(None) };
        let first = |attr: &str| entry.attrs.get(attr).and_then(|v| v.first()).cloned();
        let control = first("userAccountControl").and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        Ok(Some(DirectoryUser {
            domain: account.domain.clone(),
            user: first("sAMAccountName").unwrap_or_else(|| account.user.clone()),
            display_name: first("displayName"),
            enabled: control & ACCOUNTDISABLE == 0,
        }))
    }
}

impl UserDirectory for LdapDirectory {
    fn lookup<'a>(&'a self, account: &'a UserAccount) -> LookupFuture<'a> {
        Box::pin(async move {
            let serves = self.config.domains.is_empty()
                || self.config.domains.iter().any(|d| d.eq_ignore_ascii_case(&account.domain));
            if !serves {
                return Ok(None);
            }
            match tokio::time::timeout(self.config.timeout, self.search(account)).await {
                Ok(result) => result.map_err(|e| DirectoryError::Ldap(e.to_string())),
                Err(_) => Err(DirectoryError::Timeout(self.config.timeout)),
            }
        })
    }

    fn describe(&self) -> String {
        format!("LDAP {} base {}", self.config.url, self.config.base_dn)
    }
}

/// A user bound to an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoundUser {
    /// The account.
    pub account: UserAccount,
    /// Its display name from the directory.
    pub display_name: Option<String>,
    /// The endpoint it signed in on.
    pub endpoint: EndpointId,
}

/// IP -> signed-in domain user, kept per endpoint.
#[derive(Debug, Default)]
pub struct UserBindings {
    by_ip: HashMap<IpAddr, BoundUser>,
    /// Per endpoint: its addresses and its users, latest last.
    by_endpoint: HashMap<EndpointId, (Vec<IpAddr>, Vec<BoundUser>)>,
}

impl UserBindings {
    /// Binds `ips` of `endpoint` to `user` (the latest sign-in wins the addresses).
    pub fn bind(&mut self, endpoint: EndpointId, ips: Vec<IpAddr>, user: BoundUser) {
        let entry = self.by_endpoint.entry(endpoint).or_default();
        entry.1.retain(|u| u.account != user.account);
        entry.1.push(user);
        entry.0 = ips;
        self.rebind(endpoint);
    }

    /// The endpoint's addresses changed (a new Hello): move its bindings.
    pub fn set_addresses(&mut self, endpoint: EndpointId, ips: Vec<IpAddr>) {
        if let Some(entry) = self.by_endpoint.get_mut(&endpoint) {
            entry.0 = ips;
            self.rebind(endpoint);
        }
    }

    /// Signs `account` out of `endpoint`; returns whether it was bound.
    pub fn unbind(&mut self, endpoint: EndpointId, account: &UserAccount) -> bool {
        let Some(entry) = self.by_endpoint.get_mut(&endpoint) else { return false };
        let before = entry.1.len();
        entry.1.retain(|u| &u.account != account);
        let removed = entry.1.len() != before;
        self.rebind(endpoint);
        removed
    }

    /// Signs every user out of `endpoint` (heartbeat lost); returns them.
    pub fn unbind_all(&mut self, endpoint: EndpointId) -> Vec<UserAccount> {
        let Some(entry) = self.by_endpoint.get_mut(&endpoint) else { return Vec::new() };
        let users = std::mem::take(&mut entry.1).into_iter().map(|u| u.account).collect();
        self.rebind(endpoint);
        users
    }

    /// The user bound to `ip`.
    pub fn user_of(&self, ip: IpAddr) -> Option<&BoundUser> {
        self.by_ip.get(&ip)
    }

    /// The users signed in on `endpoint`, oldest first.
    pub fn users_of(&self, endpoint: EndpointId) -> impl Iterator<Item = &BoundUser> {
        self.by_endpoint.get(&endpoint).into_iter().flat_map(|e| e.1.iter())
    }

    /// Addresses bound.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// Whether none is bound.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    fn rebind(&mut self, endpoint: EndpointId) {
        self.by_ip.retain(|_, u| u.endpoint != endpoint);
        let Some((ips, users)) = self.by_endpoint.get(&endpoint) else { return };
        if let Some(latest) = users.last() {
            for ip in ips {
                self.by_ip.insert(*ip, latest.clone());
            }
        } else {
            self.by_endpoint.remove(&endpoint);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct(d: &str, u: &str) -> UserAccount {
        UserAccount { domain: d.into(), user: u.into() }
    }

    #[test]
    fn local_accounts_are_recognised() {
        assert!(is_local_account(&acct("", "bob"), "PC1"));
        assert!(is_local_account(&acct(".", "bob"), "PC1"));
        assert!(is_local_account(&acct("pc1", "bob"), "PC1"));
        assert!(!is_local_account(&acct("CORP", "bob"), "PC1"));
    }

    #[tokio::test]
    async fn file_directory_toml_and_json_case_insensitive() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("users.toml");
        std::fs::write(&toml_path, "[[users]]\ndomain = \"CORP\"\nuser = \"Alice\"\ndisplay_name = \"Alice E\"\n\n[[users]]\ndomain = \"CORP\"\nuser = \"gone\"\nenabled = false\n").unwrap();
        let d = FileDirectory::load(&toml_path).unwrap();
        assert_eq!(d.len(), 2);
        let u = d.lookup(&acct("corp", "alice")).await.unwrap().unwrap();
        assert_eq!(u.display_name.as_deref(), Some("Alice E"));
        assert!(u.enabled);
        assert!(!d.lookup(&acct("CORP", "gone")).await.unwrap().unwrap().enabled);
        assert!(d.lookup(&acct("OTHER", "alice")).await.unwrap().is_none());
        let json_path = dir.path().join("users.json");
        std::fs::write(&json_path, r#"{"users":[{"domain":"CORP","user":"bob"}]}"#).unwrap();
        assert!(FileDirectory::load(&json_path).unwrap().lookup(&acct("CORP", "BOB")).await.unwrap().is_some());
        std::fs::write(&toml_path, "[[user]]\nname = 1\n").unwrap();
        let err = FileDirectory::load(&toml_path).unwrap_err().to_string();
        assert!(err.contains("[[users]]") && !err.contains('\n'), "{err}");
    }

    #[tokio::test]
    async fn ldap_directory_reports_an_unreachable_server() {
        // Nothing listens on this port: the lookup must fail, not pretend.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = LdapDirectory::new(LdapDirectoryConfig {
            url: format!("ldap://127.0.0.1:{port}"),
            base_dn: "DC=corp,DC=example".into(),
            bind_dn: None,
            bind_password: None,
            domains: vec!["CORP".into()],
            timeout: Duration::from_secs(2),
        });
        assert!(d.lookup(&acct("OTHER", "alice")).await.unwrap().is_none(), "not its domain");
        let err = d.lookup(&acct("CORP", "alice")).await.unwrap_err().to_string();
        assert!(err.contains("LDAP") || err.contains("timed out"), "{err}");
    }

    #[test]
    fn bindings_follow_the_latest_user_and_sign_outs() {
        let mut b = UserBindings::default();
        let e = EndpointId(1);
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let bu = |a: UserAccount| BoundUser { account: a, display_name: None, endpoint: e };
        b.bind(e, vec![ip], bu(acct("CORP", "alice")));
        b.bind(e, vec![ip], bu(acct("CORP", "bob")));
        assert_eq!(b.user_of(ip).unwrap().account.user, "bob");
        assert!(b.unbind(e, &acct("CORP", "bob")));
        assert_eq!(b.user_of(ip).unwrap().account.user, "alice");
        let ip2: IpAddr = "10.0.0.6".parse().unwrap();
        b.set_addresses(e, vec![ip2]);
        assert!(b.user_of(ip).is_none());
        assert_eq!(b.user_of(ip2).unwrap().account.user, "alice");
        assert_eq!(b.unbind_all(e), vec![acct("CORP", "alice")]);
        assert!(b.is_empty());
    }
}

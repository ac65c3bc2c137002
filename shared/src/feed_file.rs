//! Files the gateway can load its enforcement state from when no Central is
//! attached (and tests and the demo do): a threat feed file (indicators,
//! exclusions, feed settings) and a static endpoints file.
//!
//! ```toml
//! # threat feed file
//! [settings]                     # ThreatFeedSettings: global switch and action,
//! enabled = true                 # per-feed overrides under [settings.feeds.NAME]
//! action = "log_and_drop"        # log_only | log_and_drop
//!
//! [[indicator]]
//! value = "malware.example"      # IPv4/IPv6 address or CIDR, domain, or URL
//! audit_id = "MDR-1234"
//! feed = "mdr"                   # optional, default "mdr"
//!
//! exclusions = ["198.51.100.7", "10.0.0.0/8", "safe.example", "http://x.example/ok"]
//!
//! [[list]]                       # a plain list: one indicator per line,
//! file = "mdr-ips.txt"           # `VALUE [AUDIT_ID]`; `#` starts a comment;
//! feed = "mdr"                   # a relative path is relative to this file
//! ```
//!
//! ```toml
//! # static endpoints file
//! [[endpoint]]
//! id = 1
//! health = "red"                 # green | yellow | red | missing | no_heartbeat
//! interfaces = [{ mac = "02:00:00:00:00:01", ips = ["10.0.0.1"] }]
//! ```
//!
//! A file is applied whole or not at all: any bad entry rejects the file
//! with an error naming the entry and the fix.

use crate::endpoint::Endpoint;
use crate::indicators::{IndicatorError, IndicatorSet, IndicatorSetBuilder, ThreatExclusion, ThreatFeedSettings};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Why a file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FeedFileError {
    /// Unreadable.
    #[error("cannot read {path}: {source}: check the path in [enforcement]")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML or unknown keys.
    #[error("{path}: {message}: fix the file (format in shared/src/feed_file.rs)")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, on one line.
        message: String,
    },
    /// An indicator or exclusion that is not an IP, CIDR, domain or URL.
    #[error("{path}: {source}")]
    Entry {
        /// The file.
        path: PathBuf,
        /// The entry's error.
        source: IndicatorError,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedIndicator {
    value: String,
    audit_id: String,
    #[serde(default = "default_feed")]
    feed: String,
}

fn default_feed() -> String {
    "mdr".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedList {
    file: PathBuf,
    #[serde(default = "default_feed")]
    feed: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThreatFeedFile {
    #[serde(default)]
    settings: ThreatFeedSettings,
    #[serde(default, rename = "indicator")]
    indicators: Vec<FeedIndicator>,
    #[serde(default)]
    exclusions: Vec<String>,
    #[serde(default, rename = "list")]
    lists: Vec<FeedList>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointsFile {
    #[serde(default, rename = "endpoint")]
    endpoints: Vec<Endpoint>,
}

fn read(path: &Path) -> Result<String, FeedFileError> {
    std::fs::read_to_string(path).map_err(|source| FeedFileError::Read { path: path.to_owned(), source })
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, FeedFileError> {
    crate::toml_file::parse(text).map_err(|e| FeedFileError::Parse {
        path: path.to_owned(),
        message: format!("line {}, column {}: {}{}", e.line, e.column, e.key, e.message),
    })
}

/// Loads a threat feed file into a compiled indicator set.
pub fn load_threat_feed(path: &Path) -> Result<IndicatorSet, FeedFileError> {
    let file: ThreatFeedFile = parse(path, &read(path)?)?;
    let entry = |source| FeedFileError::Entry { path: path.to_owned(), source };
    let mut builder = IndicatorSetBuilder::with_capacity(file.indicators.len());
    for i in &file.indicators {
        let kind = i.value.parse().map_err(entry)?;
        builder.add_parts(&kind, &i.audit_id, &i.feed).map_err(entry)?;
    }
    for list in &file.lists {
        let list_path = path.parent().map_or_else(|| list.file.clone(), |dir| dir.join(&list.file));
        let text = read(&list_path)?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let value = words.next().unwrap_or_default();
            let at = |source| FeedFileError::Entry { path: list_path.clone(), source };
            let kind = value.parse().map_err(|e| {
                let mut err = at(e);
                if let FeedFileError::Entry { path, .. } = &mut err {
                    *path = PathBuf::from(format!("{}:{}", path.display(), n + 1));
                }
                err
            })?;
            let audit = words.next().map_or_else(|| format!("{}:{}", list.feed, n + 1), str::to_owned);
            builder.add_parts(&kind, &audit, &list.feed).map_err(at)?;
        }
    }
    let exclusions: Vec<ThreatExclusion> =
        file.exclusions.iter().map(|e| e.parse()).collect::<Result<_, _>>().map_err(entry)?;
    builder.build(&file.settings).with_exclusions(&exclusions).map_err(entry)
}

/// Loads a static endpoints file.
pub fn load_endpoints(path: &Path) -> Result<Vec<Endpoint>, FeedFileError> {
    let file: EndpointsFile = parse(path, &read(path)?)?;
    Ok(file.endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::EndpointHealth;
    use crate::indicators::IndicatorMatch;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn feed_file_loads_with_exclusions_and_settings() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "feed.toml",
            r#"
[settings]
action = "log_only"

[[indicator]]
value = "malware.example"
audit_id = "A-1"

[[indicator]]
value = "198.51.100.0/24"
audit_id = "A-2"
feed = "other"

exclusions = ["198.51.100.7"]
"#,
        );
        // `exclusions` after a table header belongs to that table in TOML: the
        // file must put it before the first [[indicator]]; this one is rejected.
        assert!(load_threat_feed(&p).is_err());
        let p = write(
            dir.path(),
            "feed2.toml",
            "exclusions = [\"198.51.100.7\"]\n[settings]\naction = \"log_only\"\n[[indicator]]\nvalue = \"malware.example\"\naudit_id = \"A-1\"\n[[indicator]]\nvalue = \"198.51.100.0/24\"\naudit_id = \"A-2\"\nfeed = \"other\"\n",
        );
        let set = load_threat_feed(&p).unwrap();
        assert_eq!(set.len(), 2);
        assert!(matches!(set.match_domain(b"x.malware.example"), IndicatorMatch::Hit(h) if h.audit_id == "A-1"));
        assert!(matches!(set.match_ip("198.51.100.7".parse().unwrap()), IndicatorMatch::Excluded(_)));
        assert!(matches!(set.match_ip("198.51.100.8".parse().unwrap()), IndicatorMatch::Hit(h) if h.feed == "other"));
    }

    #[test]
    fn a_bad_entry_rejects_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bad.toml", "[[indicator]]\nvalue = \"not a thing!\"\naudit_id = \"A\"\n");
        let err = load_threat_feed(&p).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("not a thing!"), "{err}");
        let p = write(dir.path(), "bad2.toml", "[[indicator]]\nvalu = \"x\"\n");
        assert!(load_threat_feed(&p).unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn plain_lists_load_relative_to_the_feed_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ips.txt", "# MDR list\n198.51.100.1 MDR-1\n198.51.100.0/30\n\nbad.example\n");
        let p = write(dir.path(), "feed.toml", "[[list]]\nfile = \"ips.txt\"\nfeed = \"mdr\"\n");
        let set = load_threat_feed(&p).unwrap();
        assert_eq!(set.len(), 3);
        assert!(matches!(set.match_ip("198.51.100.1".parse().unwrap()), IndicatorMatch::Hit(h) if h.audit_id == "MDR-1"));
        assert!(matches!(set.match_ip("198.51.100.2".parse().unwrap()), IndicatorMatch::Hit(h) if h.audit_id == "mdr:3"));
        write(dir.path(), "ips.txt", "198.51.100.1\nbad!value MDR-2\n");
        let err = load_threat_feed(&p).unwrap_err().to_string();
        assert!(err.contains("ips.txt:2"), "{err}");
    }

    #[test]
    fn endpoints_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "eps.toml",
            "[[endpoint]]\nid = 7\nhealth = \"red\"\ninterfaces = [{ mac = \"02:00:00:00:00:07\", ips = [\"10.0.0.7\", \"fd00::7\"] }]\n",
        );
        let eps = load_endpoints(&p).unwrap();
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].health, EndpointHealth::Red);
        assert_eq!(eps[0].interfaces[0].ips.len(), 2);
    }
}

//! Threat feed formats besides Central's own JSON: plain lists (one IoC per
//! line, one type per feed, as the vendor's v21 third-party feeds have them)
//! and STIX 2.1 bundles of `indicator` objects whose patterns compare
//! `ipv4-addr`, `ipv6-addr`, `domain-name` or `url` values.
//!
//! Both parse into [`WireIndicator`]s, validated whole: one bad line rejects
//! the list (with its line number). STIX indicators whose `valid_until` has
//! passed, revoked ones, and ones whose pattern is not a plain equality on a
//! supported type (file hashes, `AND`, `MATCHES`, ...) are skipped and
//! counted, since real bundles mix them in. This module fetches nothing.

use super::protocol::{check_feed_name, check_indicator, UpdateError, WireIndicator};
use hbgw_shared::indicators::IndicatorKind;
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The one type a plain list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListType {
    /// IPv4 addresses or networks.
    Ipv4,
    /// IPv6 addresses or prefixes.
    Ipv6,
    /// Domains.
    Domain,
    /// URLs.
    Url,
    /// Any of them (Central's bulk post).
    Any,
}

impl ListType {
    fn admits(self, kind: &IndicatorKind) -> bool {
        matches!(
            (self, kind),
            (ListType::Any, _)
                | (ListType::Ipv4, IndicatorKind::Ipv4(_) | IndicatorKind::Ipv4Net(_))
                | (ListType::Ipv6, IndicatorKind::Ipv6(_) | IndicatorKind::Ipv6Net(_))
                | (ListType::Domain, IndicatorKind::Domain(_))
                | (ListType::Url, IndicatorKind::Url(_))
        )
    }
}

/// Parses a plain list: `VALUE [AUDIT_ID]` per line, `#` comments. A line
/// without an audit ID gets `FEED:LINE`.
pub fn parse_plain_list(text: &str, feed: &str, kind: ListType) -> Result<Vec<WireIndicator>, UpdateError> {
    check_feed_name(feed)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let value = words.next().unwrap_or_default();
        let audit_id = words.next().map_or_else(|| format!("{feed}:{}", n + 1), str::to_owned);
        let ind = WireIndicator { value: value.to_owned(), audit_id, feed: feed.to_owned() };
        let parsed = check_indicator(&ind).map_err(|e| UpdateError::Invalid(format!("line {}: {e}", n + 1)))?;
        if !kind.admits(&parsed) {
            return Err(UpdateError::Invalid(format!(
                "line {}: `{value}` is not of this feed's type ({kind:?}): a plain list holds one type; split it into one feed per type",
                n + 1
            )));
        }
        out.push(ind);
    }
    Ok(out)
}

/// What a STIX bundle gave.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StixIndicators {
    /// The usable indicators (audit ID: the STIX id, with `#n` for the n-th
    /// value of a pattern with several).
    pub indicators: Vec<WireIndicator>,
    /// Skipped: `valid_until` passed.
    pub expired: usize,
    /// Skipped: revoked.
    pub revoked: usize,
    /// Skipped: a pattern this gateway cannot enforce.
    pub unsupported: usize,
}

#[derive(Deserialize)]
struct Bundle {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    objects: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct StixIndicator {
    id: String,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    pattern_type: Option<String>,
    #[serde(default)]
    valid_until: Option<String>,
    #[serde(default)]
    revoked: bool,
}

/// Parses a STIX 2.1 bundle.
pub fn parse_stix_bundle(text: &str, feed: &str, now: OffsetDateTime) -> Result<StixIndicators, UpdateError> {
    check_feed_name(feed)?;
    let bad = |m: String| UpdateError::Invalid(m);
    let bundle: Bundle = serde_json::from_str(text)
        .map_err(|e| bad(format!("STIX bundle: {e}: send a STIX 2.1 bundle ({{\"type\": \"bundle\", \"objects\": [...]}})")))?;
    if bundle.kind != "bundle" {
        return Err(bad(format!("STIX: top-level type is {:?}, not \"bundle\": wrap the objects in a bundle", bundle.kind)));
    }
    let mut out = StixIndicators::default();
    for obj in &bundle.objects {
        if obj.get("type").and_then(|t| t.as_str()) != Some("indicator") {
            continue;
        }
        let ind: StixIndicator = serde_json::from_value(obj.clone())
            .map_err(|e| bad(format!("STIX indicator: {e}: fix the object")))?;
        if ind.revoked {
            out.revoked += 1;
            continue;
        }
        if let Some(until) = &ind.valid_until {
            let t = OffsetDateTime::parse(until, &Rfc3339)
                .map_err(|e| bad(format!("STIX {}: valid_until {until:?}: {e}: use an RFC 3339 timestamp", ind.id)))?;
            if t <= now {
                out.expired += 1;
                continue;
            }
        }
        if ind.pattern_type.as_deref().is_some_and(|t| t != "stix") {
            out.unsupported += 1;
            continue;
        }
        let Some(pattern) = &ind.pattern else {
            out.unsupported += 1;
            continue;
        };
        match pattern_values(pattern) {
            Some(values) => {
                let many = values.len() > 1;
                for (i, v) in values.into_iter().enumerate() {
                    let audit_id = if many { format!("{}#{}", ind.id, i + 1) } else { ind.id.clone() };
                    let w = WireIndicator { value: v, audit_id, feed: feed.to_owned() };
                    check_indicator(&w).map_err(|e| bad(format!("STIX {}: {e}", ind.id)))?;
                    out.indicators.push(w);
                }
            }
            None => out.unsupported += 1,
        }
    }
    Ok(out)
}

/// The values of a pattern made only of `[TYPE:value = 'V']` comparisons
/// joined by `OR` (inside or between brackets), for the supported types.
fn pattern_values(pattern: &str) -> Option<Vec<String>> {
    let mut values = Vec::new();
    let mut rest = pattern.trim();
    let mut expect_term = true;
    while !rest.is_empty() {
        if expect_term {
            rest = rest.trim_start_matches(|c: char| c == '[' || c.is_whitespace());
            let (path, after) = rest.split_once('=')?;
            let path = path.trim();
            let (object, prop) = path.split_once(':')?;
            if prop != "value" || !["ipv4-addr", "ipv6-addr", "domain-name", "url"].contains(&object) {
                return None;
            }
            let after = after.trim_start().strip_prefix('\'')?;
            // A quoted string with \' and \\ escapes.
            let mut v = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => v.push(chars.next()?.1),
                    '\'' => break i,
                    _ => v.push(c),
                }
            };
            values.push(v);
            rest = after[end + 1..].trim_start_matches(|c: char| c == ']' || c.is_whitespace());
            expect_term = false;
        } else {
            rest = rest.strip_prefix("OR")?;
            if !rest.starts_with([' ', '[']) {
                return None;
            }
            expect_term = true;
        }
    }
    (!values.is_empty() && !expect_term).then_some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_list_one_type_per_feed() {
        let l = parse_plain_list("# ips\n203.0.113.9 TP-1\n198.51.100.0/24\n\n", "tp", ListType::Ipv4).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].audit_id, "TP-1");
        assert_eq!(l[1].audit_id, "tp:3");
        let e = parse_plain_list("203.0.113.9\nevil.example\n", "tp", ListType::Ipv4).unwrap_err().to_string();
        assert!(e.starts_with("line 2:") && e.contains("one type"), "{e}");
        let e = parse_plain_list("ok.example\nbad..example\n", "tp", ListType::Domain).unwrap_err().to_string();
        assert!(e.starts_with("line 2:"), "{e}");
    }

    #[test]
    fn stix_patterns_validity_and_revocation() {
        let now = OffsetDateTime::parse("2026-01-01T00:00:00Z", &Rfc3339).unwrap();
        let bundle = r#"{"type":"bundle","id":"bundle--1","objects":[
          {"type":"indicator","spec_version":"2.1","id":"indicator--a","pattern_type":"stix","pattern":"[ipv4-addr:value = '203.0.113.9']","valid_from":"2025-01-01T00:00:00Z"},
          {"type":"indicator","id":"indicator--b","pattern_type":"stix","pattern":"[domain-name:value = 'evil.example'] OR [url:value = 'http://x.example/a\\'b']"},
          {"type":"indicator","id":"indicator--c","pattern_type":"stix","pattern":"[ipv6-addr:value = '2001:db8::1']","valid_until":"2025-06-01T00:00:00Z"},
          {"type":"indicator","id":"indicator--d","pattern_type":"stix","pattern":"[ipv4-addr:value = '198.51.100.1']","revoked":true},
          {"type":"indicator","id":"indicator--e","pattern_type":"stix","pattern":"[file:hashes.'SHA-256' = 'aa']"},
          {"type":"indicator","id":"indicator--f","pattern_type":"stix","pattern":"[ipv4-addr:value = '1.2.3.4' AND ipv4-addr:value = '5.6.7.8']"},
          {"type":"indicator","id":"indicator--g","pattern_type":"stix","pattern":"[ipv6-addr:value = '2001:db8::2']","valid_until":"2027-06-01T00:00:00Z"},
          {"type":"malware","id":"malware--x","name":"x"}
        ]}"#;
        let r = parse_stix_bundle(bundle, "stix", now).unwrap();
        let vals: Vec<(&str, &str)> = r.indicators.iter().map(|i| (i.value.as_str(), i.audit_id.as_str())).collect();
        assert_eq!(
            vals,
            vec![
                ("203.0.113.9", "indicator--a"),
                ("evil.example", "indicator--b#1"),
                ("http://x.example/a'b", "indicator--b#2"),
                ("2001:db8::2", "indicator--g")
            ]
        );
        assert_eq!((r.expired, r.revoked, r.unsupported), (1, 1, 2));
        let bad = r#"{"type":"bundle","objects":[{"type":"indicator","id":"indicator--z","pattern":"[domain-name:value = 'not a name']"}]}"#;
        assert!(parse_stix_bundle(bad, "stix", now).unwrap_err().to_string().contains("indicator--z"));
        assert!(parse_stix_bundle("{\"type\":\"indicator\"}", "stix", now).is_err());
        assert!(parse_stix_bundle("garbage", "stix", now).is_err());
    }
}

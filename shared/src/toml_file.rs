//! Reading TOML into typed structs with errors a person can act on: the line
//! and column, the key path (`dataplane.bursts`, `rule[3].services`) and the
//! parser's message on one line. Shared by every file hbgw reads.

use serde::de::DeserializeOwned;

/// Where and why a TOML text did not fit its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// `key `a.b.c`: `, or empty when the error is not about one key.
    pub key: String,
    /// The parser's message, on one line.
    pub message: String,
}

/// Parses `text` as a `T`.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, TomlError> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|err| {
        let key = err.path().to_string();
        let inner = err.into_inner();
        let (line, column) = inner.span().map_or((1, 1), |span| line_column(text, span.start));
        TomlError {
            line,
            column,
            key: if key.is_empty() || key == "." { String::new() } else { format!("key `{key}`: ") },
            message: inner.message().replace('\n', " ").trim().to_owned(),
        }
    })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

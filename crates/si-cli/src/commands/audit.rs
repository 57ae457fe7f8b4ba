//! `si-cli audit verify` and `si-cli audit export`.

use std::io::Write;

use si_audit::{AuditError, VerifyReport};
use si_core::Config;

use crate::CliError;

/// Checks the chain of the audit trail `config` names (and that it still holds
/// `expect_head`, if given), reports to `out`, and returns whether it is intact.
pub async fn verify(
    config: &Config,
    expect_head: Option<&str>,
    out: &mut impl Write,
) -> Result<bool, CliError> {
    let store = si_store::audit_reader(config)
        .await
        .map_err(|e| CliError::Message(e.to_string()))?;
    let io = |e: std::io::Error| CliError::Message(format!("cannot write output: {e}"));
    let report = si_audit::verify(store.as_ref(), expect_head)
        .await
        .map_err(|e| CliError::Message(e.to_string()))?;
    match report {
        VerifyReport::Intact { records, head } => {
            writeln!(out, "audit log intact: {records} records, last hash {head}").map_err(io)?;
            Ok(true)
        }
        VerifyReport::Broken { seq, reason } => {
            writeln!(out, "audit log BROKEN at record {seq}: {reason}").map_err(io)?;
            Ok(false)
        }
    }
}

/// Writes the records between `since` and `until` as JSON lines; stops at a
/// record that is not as it was written.
pub async fn export(
    config: &Config,
    since: Option<&str>,
    until: Option<&str>,
    out: &mut (impl Write + Send),
) -> Result<u64, CliError> {
    let since = since.map(parse_time).transpose()?;
    let until = until.map(parse_time).transpose()?;
    let store = si_store::audit_reader(config)
        .await
        .map_err(|e| CliError::Message(e.to_string()))?;
    si_audit::export(store.as_ref(), since, until, out)
        .await
        .map_err(|e| match e {
            // The export sees only its window; verify walks the whole chain.
            AuditError::Altered { .. } => CliError::Message(format!(
                "{e}; `si-cli audit verify` checks the whole audit log"
            )),
            e => CliError::Message(e.to_string()),
        })
}

/// Milliseconds since the epoch of an RFC 3339 time, or of midnight UTC of a date.
fn parse_time(text: &str) -> Result<i64, CliError> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    humantime::parse_rfc3339_weak(&full)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| {
            CliError::Message(format!(
                "`{text}` is not a time; use e.g. 2026-11-26 or 2026-11-26T08:00:00Z"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_dates_parse() {
        assert_eq!(parse_time("1970-01-02").unwrap(), 86_400_000);
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1_000);
        assert!(parse_time("yesterday").is_err());
    }
}

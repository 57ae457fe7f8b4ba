//! `si-cli audit verify` and `si-cli audit export`.

use std::io::Write;
use std::path::Path;

use si_auth::audit::{AUDIT_FILE, VerifyReport};

use crate::CliError;

/// Checks the chain in `data_dir` (and that it still holds `expect_head`, if given),
/// reports to `out`, and returns whether it is intact.
pub fn verify(
    data_dir: &Path,
    expect_head: Option<&str>,
    out: &mut impl Write,
) -> Result<bool, CliError> {
    let path = data_dir.join(AUDIT_FILE);
    let io = |e: std::io::Error| CliError::Message(format!("cannot write output: {e}"));
    let report = match expect_head {
        Some(head) => si_auth::audit::verify_with_head(&path, head)?,
        None => si_auth::audit::verify(&path)?,
    };
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

/// Writes the records between `since` and `until` as JSON lines.
pub fn export(
    data_dir: &Path,
    since: Option<&str>,
    until: Option<&str>,
    out: &mut impl Write,
) -> Result<u64, CliError> {
    let since = since.map(parse_time).transpose()?;
    let until = until.map(parse_time).transpose()?;
    Ok(si_auth::audit::export(
        &data_dir.join(AUDIT_FILE),
        since,
        until,
        out,
    )?)
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

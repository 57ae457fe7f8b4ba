//! Prompt templates of workflow steps: text with `{{input.NAME}}` (a value the
//! caller gives) and `{{steps.ID}}` (an earlier step's answer). Nothing else is
//! interpreted, so a value can never inject a placeholder of its own: values are
//! substituted in one pass over the template, not over the result.

use std::collections::BTreeMap;

/// A placeholder in a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placeholder {
    /// `{{input.NAME}}`.
    Input(String),
    /// `{{steps.ID}}`.
    Step(String),
}

/// The pieces of a template: text and placeholders, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// A placeholder.
    Placeholder(Placeholder),
}

/// Splits `template` into pieces, or says what is wrong with it.
pub fn parse(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            pieces.push(Piece::Text(rest[..start].to_owned()));
        }
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("a `{{` is never closed with `}}`")?;
        let inner = after[..end].trim();
        let placeholder = match inner.split_once('.') {
            Some(("input", name)) if is_name(name) => Placeholder::Input(name.to_owned()),
            Some(("steps", id)) if is_name(id) => Placeholder::Step(id.to_owned()),
            _ => {
                return Err(format!(
                    "`{{{{{inner}}}}}` is not a placeholder; use {{{{input.NAME}}}} or {{{{steps.ID}}}}"
                ));
            }
        };
        pieces.push(Piece::Placeholder(placeholder));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    Ok(pieces)
}

fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// The template with its placeholders filled; one that has no value becomes
/// `(not available)`.
pub fn render(
    pieces: &[Piece],
    inputs: &BTreeMap<String, String>,
    steps: &BTreeMap<String, String>,
) -> String {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Placeholder(Placeholder::Input(name)) => {
                out.push_str(inputs.get(name).map_or("(not available)", String::as_str));
            }
            Piece::Placeholder(Placeholder::Step(id)) => {
                out.push_str(steps.get(id).map_or("(not available)", String::as_str));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_once() {
        let pieces = parse("Note: {{ input.note }}\nAssessment: {{steps.assess}}.").unwrap();
        let inputs = BTreeMap::from([("note".to_owned(), "{{steps.assess}}".to_owned())]);
        let steps = BTreeMap::from([("assess".to_owned(), "stable".to_owned())]);
        assert_eq!(
            render(&pieces, &inputs, &steps),
            "Note: {{steps.assess}}\nAssessment: stable."
        );
        assert_eq!(
            render(&pieces, &BTreeMap::new(), &BTreeMap::new()),
            "Note: (not available)\nAssessment: (not available)."
        );
    }

    #[test]
    fn bad_placeholders_are_named() {
        assert!(parse("{{input.note").unwrap_err().contains("never closed"));
        assert!(parse("{{ patient }}").unwrap_err().contains("{{patient}}"));
        assert!(parse("{{steps.}}").is_err());
        assert_eq!(parse("no placeholders").unwrap().len(), 1);
    }
}

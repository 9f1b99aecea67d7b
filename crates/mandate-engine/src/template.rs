//! SQL templates for a role's creation and revocation. Every value that
//! reaches SQL goes through PostgreSQL's own quoting rules: an identifier
//! in double quotes (inner quotes doubled), a literal in single quotes
//! (inner quotes doubled; `standard_conforming_strings` is on since 9.1 and
//! checked at connect). A template may use only the placeholders below, so
//! nothing an agent or a task controls (its intent, its id) is ever spliced
//! in, and an operator's typo is refused when the tool is registered.

use std::fmt::Write;

/// The values a template may name.
pub struct Inputs<'a> {
    /// The generated login (identifier).
    pub name: &'a str,
    /// What `{{password}}` stands for: the login's SCRAM-SHA-256 verifier,
    /// which PostgreSQL stores as given (never the password itself).
    pub password: &'a str,
    /// `2026-12-07 18:00:00+00` (literal), the task's deadline.
    pub valid_until: &'a str,
}

/// `{{name}}` (identifier), `{{name_literal}}` (the same as a literal, for
/// `pg_stat_activity.usename = …`), `{{password}}` and `{{valid_until}}`.
pub const PLACEHOLDERS: [&str; 4] = ["name", "name_literal", "password", "valid_until"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder `{{{{{0}}}}}` (known: name, name_literal, password, valid_until)")]
    Unknown(String),
    #[error("a `{{{{` is not closed by `}}}}`")]
    Unclosed,
    #[error("a value holds a NUL byte, which PostgreSQL cannot take")]
    Nul,
}

pub fn quote_ident(s: &str) -> Result<String, TemplateError> {
    if s.contains('\0') {
        return Err(TemplateError::Nul);
    }
    Ok(format!("\"{}\"", s.replace('"', "\"\"")))
}

pub fn quote_literal(s: &str) -> Result<String, TemplateError> {
    if s.contains('\0') {
        return Err(TemplateError::Nul);
    }
    Ok(format!("'{}'", s.replace('\'', "''")))
}

/// Check a template's placeholders without rendering it.
pub fn check(template: &str) -> Result<(), TemplateError> {
    let inputs = Inputs {
        name: "n",
        password: "p",
        valid_until: "v",
    };
    render(template, &inputs).map(|_| ())
}

pub fn render(template: &str, inputs: &Inputs<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
        let key = after[..end].trim();
        let value = match key {
            "name" => quote_ident(inputs.name)?,
            "name_literal" => quote_literal(inputs.name)?,
            "password" => quote_literal(inputs.password)?,
            "valid_until" => quote_literal(inputs.valid_until)?,
            other => return Err(TemplateError::Unknown(other.chars().take(40).collect())),
        };
        let _ = write!(out, "{value}");
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn inputs<'a>(name: &'a str, password: &'a str) -> Inputs<'a> {
        Inputs {
            name,
            password,
            valid_until: "2026-12-07 18:00:00+00",
        }
    }

    #[test]
    fn values_are_quoted_by_postgres_rules() {
        let sql = render(
            "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{ valid_until }}",
            &inputs("a\"b", "p'; DROP TABLE x; --"),
        )
        .unwrap();
        assert_eq!(
            sql,
            "CREATE ROLE \"a\"\"b\" LOGIN PASSWORD 'p''; DROP TABLE x; --' VALID UNTIL '2026-12-07 18:00:00+00'"
        );
    }

    #[test]
    fn unknown_or_unclosed_placeholders_are_refused() {
        assert_eq!(
            check("GRANT {{intent}}"),
            Err(TemplateError::Unknown("intent".into()))
        );
        assert_eq!(check("GRANT {{name"), Err(TemplateError::Unclosed));
        assert!(render("{{name}}", &inputs("a\0b", "p")).is_err());
        check("DROP ROLE IF EXISTS {{name}}").unwrap();
    }

    proptest! {
        /// Whatever the value, the quoted form is one token: it starts and
        /// ends with its quote, and every quote inside is doubled.
        #[test]
        fn quoting_keeps_any_value_inside_its_quotes(v in "[^\u{0}]{0,40}") {
            for (q, quoted) in [('"', quote_ident(&v).unwrap()), ('\'', quote_literal(&v).unwrap())] {
                let inner = &quoted[1..quoted.len() - 1];
                let doubled = format!("{q}{q}");
                let undoubled = inner.replace(&doubled, "");
                prop_assert!(quoted.starts_with(q) && quoted.ends_with(q));
                prop_assert_eq!(&undoubled, &v.replace(q, ""));
                prop_assert!(!undoubled.contains(q));
            }
        }
    }
}

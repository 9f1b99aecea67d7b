//! The model an agent runs on, as the agent or its operator declares it.
//! A task records the model it started under; a different one mid-task
//! is a context change that policy decides on (by default: suspend).

use crate::Invalid;
use serde::{Deserialize, Serialize};

/// A declared model (`claude-sonnet-4`) and, optionally, its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub model: String,
    #[serde(
        default,
        rename = "model_version",
        skip_serializing_if = "Option::is_none"
    )]
    pub version: Option<String>,
}

fn check(field: &str, v: &str, max: usize) -> Result<(), Invalid> {
    let ok = !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/@+-".contains(&b));
    match ok {
        true => Ok(()),
        false => Err(Invalid::new(
            field,
            format!("must be 1 to {max} letters, digits or `._:/@+-`"),
        )),
    }
}

impl Model {
    /// From the `model` and `model_version` fields of a request; `None`
    /// when neither is given. A version needs a model.
    pub fn declared(model: Option<&str>, version: Option<&str>) -> Result<Option<Model>, Invalid> {
        match (model, version) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(Invalid::new("model_version", "needs `model` beside it")),
            (Some(m), v) => {
                check("model", m, 128)?;
                if let Some(v) = v {
                    check("model_version", v, 64)?;
                }
                Ok(Some(Model {
                    model: m.to_owned(),
                    version: v.map(str::to_owned),
                }))
            }
        }
    }

    /// `model@version`, or `model`; `none` for no declaration.
    pub fn describe(m: Option<&Model>) -> String {
        match m {
            None => "none".to_owned(),
            Some(Model {
                model,
                version: None,
            }) => model.clone(),
            Some(Model {
                model,
                version: Some(v),
            }) => format!("{model}@{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declaration_is_checked_and_named() {
        let m = Model::declared(Some("claude-sonnet-4"), Some("2025-05-14")).unwrap();
        assert_eq!(Model::describe(m.as_ref()), "claude-sonnet-4@2025-05-14");
        assert_eq!(Model::declared(None, None).unwrap(), None);
        assert_eq!(Model::describe(None), "none");
        for (m, v, field) in [
            (None, Some("1"), "model_version"),
            (Some(""), None, "model"),
            (Some("has space"), None, "model"),
            (Some("gpt"), Some("x\ny"), "model_version"),
        ] {
            assert_eq!(
                Model::declared(m, v).unwrap_err().field,
                field,
                "{m:?} {v:?}"
            );
        }
        let long = "m".repeat(129);
        assert!(Model::declared(Some(&long), None).is_err());
    }
}

//! `mandate scan --import FINGERPRINT`: store one finding's value in the
//! broker as a secret of the finding's class (a person's credential as a
//! `human-exception` with an expiry), then say what replaces it in the
//! file — or, with `--rewrite`, replace it (config files only, backup kept).

use crate::client::{Client, path_segment};
use crate::secrets::parse_expiry;
use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use mandate_scan::{Finding, Report};
use serde_json::{Value, json};
use zeroize::Zeroizing;

#[derive(Args)]
pub struct ImportArgs {
    /// Store the finding with this fingerprint (or a unique prefix of 8+
    /// characters) in the broker; needs --tool and --owner.
    #[arg(long, value_name = "FINGERPRINT", requires_all = ["tool", "owner"])]
    import: Option<String>,
    /// With --import: the tool whose requests the proxy injects it into.
    #[arg(long, requires = "import", value_parser = path_segment)]
    tool: Option<String>,
    /// With --import: the accountable team or service.
    #[arg(long, requires = "import")]
    owner: Option<String>,
    /// With --import: expiry (YYYY-MM-DD or Unix seconds); required for a
    /// person's credential, which is stored as an exception.
    #[arg(long, requires = "import")]
    expires: Option<String>,
    /// With --import: the secret's name (default: RULE-FINGERPRINT8).
    #[arg(long, requires = "import", value_parser = path_segment)]
    name: Option<String>,
    /// With --import: replace the value in the file with an environment
    /// variable reference and keep FILE.mandate-backup.
    #[arg(long, requires = "import")]
    rewrite: bool,
    /// Where agents reach the proxy (for the printed instructions).
    #[arg(
        long,
        env = "MANDATE_PROXY_URL",
        default_value = "http://127.0.0.1:8400"
    )]
    proxy_url: String,
}

impl ImportArgs {
    pub fn fingerprint(&self) -> Option<&str> {
        self.import.as_deref()
    }
}

fn chosen<'a>(report: &'a Report, fp: &str) -> Result<&'a Finding> {
    if fp.len() < 8 {
        bail!("--import: give at least 8 characters of the fingerprint");
    }
    let mut hits = report
        .findings
        .iter()
        .filter(|f| f.fingerprint.starts_with(fp));
    match (hits.next(), hits.next()) {
        (Some(f), None) => Ok(f),
        (None, _) => bail!("--import: no finding with fingerprint {fp} under the given paths"),
        (Some(_), Some(_)) => {
            bail!("--import: several findings start with {fp}; give more of the fingerprint")
        }
    }
}

pub async fn import(report: &Report, fp: &str, args: &ImportArgs, client: Client) -> Result<()> {
    client.require_token("scan --import")?;
    let f = chosen(report, fp)?;
    let (Some(tool), Some(owner)) = (&args.tool, &args.owner) else {
        bail!("--import needs --tool and --owner");
    };
    if f.human && args.expires.is_none() {
        bail!(
            "--import: {}:{} is a person's credential ({}); it is stored as a human-exception, which needs --expires",
            f.file,
            f.line,
            f.rule
        );
    }
    let expires_at = args.expires.as_deref().map(parse_expiry).transpose()?;
    let bytes =
        Zeroizing::new(std::fs::read(&f.path).with_context(|| format!("re-reading {}", f.file))?);
    let value = f
        .secret_in(&bytes)
        .ok_or_else(|| anyhow!("{} changed since the scan: scan again", f.file))?;
    let value = Zeroizing::new(
        std::str::from_utf8(value)
            .map_err(|_| {
                anyhow!(
                    "{}:{}: the value is not UTF-8 text; store it with `mandate secret put`",
                    f.file,
                    f.line
                )
            })?
            .to_owned(),
    );
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", f.rule, &f.fingerprint[..8]));
    let mut body = json!({
        "name": name, "tool": tool, "class": f.class.as_str(), "owner": owner,
        "human_credential": f.human,
        "description": format!("imported by mandate scan from {}:{} ({})", f.file, f.line, f.rule),
        "value": value.as_str(),
    });
    if let Some(e) = expires_at {
        body["expires_at"] = json!(e);
    }
    let stored = client.post("/v1/secrets", &body).await;
    if let Some(v) = body.get_mut("value") {
        // serde_json has no zeroize; overwrite our copy at least.
        *v = Value::Null;
    }
    stored.with_context(|| format!("storing {}:{} in the broker", f.file, f.line))?;
    println!(
        "stored secret {name}: class {}{}, tool {tool}, owner {owner}{}",
        f.class,
        if f.human {
            " (a person's credential)"
        } else {
            ""
        },
        args.expires
            .as_deref()
            .map(|e| format!(", expires {e}"))
            .unwrap_or_default()
    );
    let var = format!(
        "MANDATE_{}_TOKEN",
        tool.to_ascii_uppercase().replace(['-', '.'], "_")
    );
    if args.rewrite {
        let done = mandate_scan::rewrite(f, &var)?;
        println!(
            "rewrote {}:{}: the value is now {} (original kept in {})",
            f.file,
            f.line,
            done.reference,
            done.backup.display()
        );
    } else {
        match mandate_scan::reference_for(&f.path, &var) {
            Some(r) => println!(
                "in {}:{} replace the value with {r} (or run again with --rewrite)",
                f.file, f.line
            ),
            None => println!(
                "in {}:{} replace the literal with a read of the environment variable {var}",
                f.file, f.line
            ),
        }
    }
    let audience = client
        .get(&format!("/v1/tools/{tool}"))
        .await
        .ok()
        .and_then(|t| t["audience"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("<{tool}'s audience>"));
    println!(
        "The agent then reaches {tool} through the proxy with a task token, never the key:\n  \
         base URL  {}/{tool}/\n  \
         run it    mandate run --key-file AGENT.key --intent \"…\" --scope {tool}=ACTION -- \\\n              \
         sh -c '{var}=$(mandate token exchange --task \"$MANDATE_TASK\" --resource {audience}) exec ./agent'\n\
         If the file was ever committed or shared, rotate the key at its issuer, then `mandate secret rotate {name}`.",
        args.proxy_url.trim_end_matches('/')
    );
    Ok(())
}

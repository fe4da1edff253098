//! `tolk models`: what is installed, by role, with the languages each offers.

use tolk_models::registry::Registry;
use tolk_protocol::catalog::{ModelInfo, ModelsResponse, Role};

use super::CommandError;
use crate::cli::ModelsArgs;

pub fn run(args: ModelsArgs) -> Result<(), CommandError> {
    let registry = Registry::scan(&args.dir.models_dir);
    if args.json {
        let body = ModelsResponse {
            models_dir: registry.dir.display().to_string(),
            models: registry.models,
            // Nothing is loaded here: devices are the server's choice.
            devices: Default::default(),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&body).map_err(anyhow::Error::from)?
        );
        return Ok(());
    }
    println!("Models in {}", registry.dir.display());
    for (role, title) in [
        (Role::Asr, "Speech recognition"),
        (Role::Vad, "Voice activity detection"),
        (Role::Translation, "Translation"),
        (Role::Tts, "Speech synthesis"),
        (Role::Runtime, "Runtimes"),
    ] {
        println!("\n{title}:");
        let mut any = false;
        for m in registry.by_role(role) {
            any = true;
            println!("  {:<22} {:<20} {}", m.name, m.engine, describe(m));
        }
        if !any {
            println!("  (none installed: run models/fetch)");
        }
    }
    Ok(())
}

fn describe(m: &ModelInfo) -> String {
    let mut parts = Vec::new();
    if let Some(d) = &m.details {
        parts.push(d.clone());
    }
    match m.languages.len() {
        0 => {}
        n if n > 12 => parts.push(format!("{n} languages")),
        _ => parts.push(format!("languages: {}", m.languages.join(" "))),
    }
    if !m.pairs.is_empty() {
        let pairs: Vec<String> = m
            .pairs
            .iter()
            .map(|p| {
                format!(
                    "{}→{}",
                    if p.source == "*" { "any" } else { &p.source },
                    p.target
                )
            })
            .collect();
        parts.push(format!("pairs: {}", pairs.join(" ")));
    }
    if let Some(size) = m.size_bytes {
        parts.push(format!("{:.1} MB", size as f64 / 1e6));
    }
    parts.join("; ")
}

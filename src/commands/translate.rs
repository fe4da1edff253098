//! `tolk translate --from en --to pt "text"`: text translation, as the server does it.

use std::time::Instant;

use tolk_models::registry::APERTIUM_MODES;
use tolk_models::translate::{self, TranslationCatalog};

use super::CommandError;
use crate::cli::TranslateArgs;

pub fn run(args: TranslateArgs) -> Result<(), CommandError> {
    let catalog =
        TranslationCatalog::discover(&args.dir.models_dir, std::path::Path::new(APERTIUM_MODES));
    let route =
        catalog.route(&args.from, &args.to).ok_or_else(|| {
            let pairs: Vec<String> = catalog
                .pairs()
                .into_iter()
                .map(|(s, t, b)| format!("{s}→{t} ({b})"))
                .collect();
            CommandError::Unsupported(format!(
            "no translation from '{}' to '{}' is installed; available: {} (and pivots through en)",
            args.from,
            args.to,
            if pairs.is_empty() { "none".to_string() } else { pairs.join(", ") }
        ))
        })?;
    let start = Instant::now();
    let mut translator = translate::open(&route).map_err(|e| CommandError::Other(e.into()))?;
    let text = translator
        .translate(&args.text)
        .map_err(|e| CommandError::Other(e.into()))?;
    tracing::debug!(%route, ms = start.elapsed().as_millis() as u64, "translated");
    println!("{text}");
    Ok(())
}

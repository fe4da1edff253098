//! Text translation: the engine-neutral [`Translator`] trait, the [`TranslationCatalog`] of
//! language pairs that are installed, and [`open`], which builds the engines for a [`Route`].
//!
//! Layout:
//! - here: the trait, its error, and how a pair is routed (direct, else through English);
//! - [`bergamot`]: neural Marian models (Firefox Translations) on `fxtranslate`;
//! - [`apertium`]: rule-based Apertium pairs, run as a subprocess;
//! - [`pivot`]: two translators chained through a pivot language.
//!
//! Which engine serves a pair is decided by what is installed, never by language: any
//! Bergamot model directory under `<models>/bergamot/` and any Apertium mode is found.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::registry;

pub mod apertium;
pub mod bergamot;
pub mod pivot;

pub use apertium::ApertiumTranslator;
pub use bergamot::BergamotTranslator;
pub use pivot::PivotTranslator;

/// The language a pair without a direct engine is translated through. Every Bergamot model
/// and most Apertium pairs have English on one side, so it is the only pivot worth trying.
pub const PIVOT_LANGUAGE: &str = "en";

#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("cannot open translation route {route}: {reason}")]
    Route { route: String, reason: &'static str },
    #[error("cannot load Bergamot model {model}: {step}: {reason} (run models/fetch, or set TOLK_MODELS_DIR)")]
    BergamotLoad {
        model: String,
        step: &'static str,
        reason: String,
    },
    #[error("Bergamot model {model} failed while translating: {reason}")]
    BergamotTranslate { model: String, reason: String },
    #[error(
        "Apertium is not installed: no `apertium` command on PATH (run models/fetch, or install the Debian packages apertium and apertium-<pair>)"
    )]
    ApertiumMissing,
    #[error("Apertium mode {mode} is not installed: {reason} (run models/fetch, or install its Debian package, such as apertium-eng-spa)")]
    ApertiumModeMissing { mode: String, reason: String },
    #[error("Apertium {mode} failed to {step}: {reason}")]
    Apertium {
        mode: String,
        step: &'static str,
        reason: String,
    },
    #[error("Apertium {mode} did not finish within {:.1} s and was stopped", .timeout.as_secs_f64())]
    ApertiumTimeout { mode: String, timeout: Duration },
}

/// One translation engine for one language pair. Implementations hold per-worker state;
/// a pool runs one per thread.
///
/// `translate` is CPU-bound (or waits on a subprocess) and blocking: call it from a worker
/// thread, never from an async executor.
pub trait Translator: Send {
    /// Translate `text` (one or more sentences) from `pair().0` to `pair().1`. Blank input
    /// gives an empty string.
    fn translate(&mut self, text: &str) -> Result<String, TranslateError>;
    /// `(source, target)`, ISO 639-1 codes.
    fn pair(&self) -> (&str, &str);
}

impl<T: Translator + ?Sized> Translator for Box<T> {
    fn translate(&mut self, text: &str) -> Result<String, TranslateError> {
        (**self).translate(text)
    }

    fn pair(&self) -> (&str, &str) {
        (**self).pair()
    }
}

/// The engine behind one hop. Declared in order of preference: where both serve a pair,
/// the neural model translates better than the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Backend {
    Bergamot,
    Apertium,
}

impl Backend {
    /// The engine's name, as the model registry reports it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Bergamot => "bergamot",
            Backend::Apertium => "apertium",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One engine translating one direct pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub backend: Backend,
    pub source: String,
    pub target: String,
    /// Bergamot: the model directory. Apertium: the `.mode` file; its stem is the mode name
    /// and the directory above `modes/` is Apertium's data directory.
    pub path: PathBuf,
}

/// How to get from `source` to `target`: one hop, or two through [`PIVOT_LANGUAGE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub source: String,
    pub target: String,
    pub hops: Vec<Hop>,
}

impl Route {
    /// Whether the text passes through another language (and so through two engines).
    pub fn pivot(&self) -> bool {
        self.hops.len() > 1
    }

    /// The pivot language, for a pivot route.
    pub fn via(&self) -> Option<&str> {
        if self.pivot() {
            self.hops.first().map(|hop| hop.target.as_str())
        } else {
            None
        }
    }
}

impl fmt::Display for Route {
    /// `es→en (apertium) →pt (bergamot)`: what a log line needs to explain a translation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if self.hops.is_empty() {
            return write!(f, "→{} (no engine)", self.target);
        }
        for (i, hop) in self.hops.iter().enumerate() {
            let space = if i == 0 { "" } else { " " };
            write!(f, "{space}→{} ({})", hop.target, hop.backend)?;
        }
        Ok(())
    }
}

/// Every direct pair installed, and the routes they make possible.
#[derive(Debug, Clone, Default)]
pub struct TranslationCatalog {
    /// One hop per installed engine and pair, Bergamot models first.
    direct: Vec<Hop>,
}

impl TranslationCatalog {
    /// Find every Bergamot model under `<models_dir>/bergamot/` and every Apertium mode in
    /// `apertium_modes` (Debian: `/usr/share/apertium/modes`). Missing directories give an
    /// empty catalog, not an error: a server without translation still transcribes.
    pub fn discover(models_dir: &Path, apertium_modes: &Path) -> Self {
        // The registry already knows how to read a pair from a model directory or a mode
        // file name; asking it keeps one definition of what "installed" means.
        let bergamot = registry::bergamot_models(models_dir).into_iter();
        let apertium = registry::apertium_pairs(apertium_modes).into_iter();
        let mut direct: Vec<Hop> = bergamot
            .map(|m| (Backend::Bergamot, m))
            .chain(apertium.map(|m| (Backend::Apertium, m)))
            .filter_map(|(backend, model)| {
                let pair = model.pairs.first()?;
                Some(Hop {
                    backend,
                    source: pair.source.clone(),
                    target: pair.target.clone(),
                    path: PathBuf::from(model.path?),
                })
            })
            .collect();
        direct.sort_by_key(|hop| hop.backend);
        Self { direct }
    }

    /// Direct pairs `(source, target, backend)`; a pair served by two engines is listed twice.
    pub fn pairs(&self) -> Vec<(String, String, Backend)> {
        self.direct
            .iter()
            .map(|hop| (hop.source.clone(), hop.target.clone(), hop.backend))
            .collect()
    }

    /// Every language that is a source or a target of some direct pair, sorted.
    pub fn languages(&self) -> Vec<String> {
        let mut languages: Vec<String> = self
            .direct
            .iter()
            .flat_map(|hop| [hop.source.clone(), hop.target.clone()])
            .collect();
        languages.sort();
        languages.dedup();
        languages
    }

    /// The best way from `source` to `target`: a direct pair (Bergamot before Apertium),
    /// else `source → en → target` when both legs are installed. `None` when neither exists
    /// or the two languages are the same (nothing to translate).
    pub fn route(&self, source: &str, target: &str) -> Option<Route> {
        if source == target {
            return None;
        }
        let hops = match self.direct(source, target) {
            Some(hop) => vec![hop.clone()],
            None if source != PIVOT_LANGUAGE && target != PIVOT_LANGUAGE => vec![
                self.direct(source, PIVOT_LANGUAGE)?.clone(),
                self.direct(PIVOT_LANGUAGE, target)?.clone(),
            ],
            None => return None,
        };
        Some(Route {
            source: source.to_string(),
            target: target.to_string(),
            hops,
        })
    }

    /// `direct` is sorted by preference, so the first match is the best engine.
    fn direct(&self, source: &str, target: &str) -> Option<&Hop> {
        self.direct
            .iter()
            .find(|hop| hop.source == source && hop.target == target)
    }
}

/// Build the engines for `route`: one translator, or a [`PivotTranslator`] chaining one per
/// hop. Loads models (seconds for a cold Bergamot model): call it on a worker thread.
pub fn open(route: &Route) -> Result<Box<dyn Translator>, TranslateError> {
    let broken = |reason| TranslateError::Route {
        route: route.to_string(),
        reason,
    };
    let (first, last) = match (route.hops.first(), route.hops.last()) {
        (Some(first), Some(last)) => (first, last),
        _ => return Err(broken("it has no hops")),
    };
    let connected = route.hops.windows(2).all(|w| w[0].target == w[1].source);
    if first.source != route.source || last.target != route.target || !connected {
        return Err(broken("its hops do not lead from its source to its target"));
    }
    if let [hop] = route.hops.as_slice() {
        return open_hop(hop);
    }
    let legs = route
        .hops
        .iter()
        .map(open_hop)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Box::new(PivotTranslator::new(legs)))
}

fn open_hop(hop: &Hop) -> Result<Box<dyn Translator>, TranslateError> {
    Ok(match hop.backend {
        Backend::Bergamot => Box::new(BergamotTranslator::load(
            &hop.path,
            &hop.source,
            &hop.target,
        )?),
        Backend::Apertium => Box::new(ApertiumTranslator::open(
            &hop.path,
            &hop.source,
            &hop.target,
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tolk-translate-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A models directory with Bergamot de→en and en→fr, and Apertium modes for en↔de,
    /// fr→en and a variant that must be ignored.
    fn catalog(name: &str) -> (PathBuf, TranslationCatalog) {
        let dir = temp_dir(name);
        for pair in ["deen", "enfr"] {
            let model_dir = dir.join("bergamot").join(pair);
            fs::create_dir_all(&model_dir).unwrap();
            fs::write(
                model_dir.join(format!("model.{pair}.intgemm.alphas.bin")),
                b"x",
            )
            .unwrap();
        }
        let modes = dir.join("modes");
        fs::create_dir_all(&modes).unwrap();
        for mode in ["deu-eng", "eng-deu", "fra-eng", "fra-eng_CA", "eng-xxx"] {
            fs::write(modes.join(format!("{mode}.mode")), "").unwrap();
        }
        let catalog = TranslationCatalog::discover(&dir, &modes);
        (dir, catalog)
    }

    #[test]
    fn direct_pairs_prefer_bergamot() {
        let (dir, catalog) = catalog("direct");
        let mut pairs = catalog.pairs();
        pairs.sort();
        let expected = [
            ("de", "en", Backend::Bergamot),
            ("de", "en", Backend::Apertium),
            ("en", "de", Backend::Apertium),
            ("en", "fr", Backend::Bergamot),
            ("fr", "en", Backend::Apertium),
        ]
        .map(|(s, t, b)| (s.to_string(), t.to_string(), b));
        let mut expected = expected.to_vec();
        expected.sort();
        assert_eq!(pairs, expected);
        assert_eq!(catalog.languages(), ["de", "en", "fr"]);

        let route = catalog.route("de", "en").unwrap();
        assert!(!route.pivot() && route.via().is_none());
        assert_eq!(route.hops[0].backend, Backend::Bergamot);
        assert_eq!(route.hops[0].path, dir.join("bergamot/deen"));
        let route = catalog.route("en", "de").unwrap();
        assert_eq!(route.hops[0].backend, Backend::Apertium);
        assert_eq!(route.hops[0].path, dir.join("modes/eng-deu.mode"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn pivots_through_english_only_when_both_legs_exist() {
        let (dir, catalog) = catalog("pivot");
        let route = catalog.route("de", "fr").unwrap();
        assert!(route.pivot());
        assert_eq!(route.via(), Some("en"));
        assert_eq!(route.to_string(), "de→en (bergamot) →fr (bergamot)");
        let route = catalog.route("fr", "de").unwrap();
        assert_eq!(route.to_string(), "fr→en (apertium) →de (apertium)");
        assert_eq!(catalog.route("de", "xx"), None);
        assert_eq!(catalog.route("xx", "en"), None);
        assert_eq!(catalog.route("en", "en"), None);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn nothing_installed_is_an_empty_catalog() {
        let dir = temp_dir("empty");
        let catalog = TranslationCatalog::discover(&dir.join("nope"), &dir.join("nope"));
        assert!(catalog.pairs().is_empty() && catalog.languages().is_empty());
        assert_eq!(catalog.route("en", "es"), None);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn broken_routes_are_refused_before_loading_anything() {
        let hop = |s: &str, t: &str| Hop {
            backend: Backend::Apertium,
            source: s.into(),
            target: t.into(),
            path: PathBuf::from("/nonexistent.mode"),
        };
        let route = |hops| Route {
            source: "es".into(),
            target: "pt".into(),
            hops,
        };
        let err = open(&route(vec![])).err().unwrap().to_string();
        assert!(err.contains("no hops"), "{err}");
        let err = open(&route(vec![hop("es", "en"), hop("fr", "pt")]))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("do not lead"), "{err}");
    }
}

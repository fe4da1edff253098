//! Bergamot models (Firefox Translations: Marian transformers with int8 weights) run by
//! `fxtranslate`, a pure-Rust port of their inference engine with a vendored SIMD GEMM.
//!
//! A model directory holds `model.<src><tgt>.*.bin`, the SentencePiece vocabulary
//! (`vocab.<src><tgt>.spm`, or `srcvocab.*.spm` + `trgvocab.*.spm` where the two sides
//! differ) and usually a lexical shortlist `lex.*.s2t.bin`.
//!
//! Threading: `fxtranslate` can split one batch across threads (`threads`) or one matrix
//! product across a GEMM pool (`gemm-threads`). Neither is enabled: tolk translates one
//! segment at a time and gets its parallelism from the translation pool's workers, and a
//! second pool inside each worker would compete with them (and with whisper) for the same
//! cores. Each call therefore runs on the calling worker's thread alone.

use std::any::Any;
use std::collections::HashMap;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use fxtranslate::engine::Engine;
use fxtranslate::shortlist::Shortlist;

use super::{TranslateError, Translator};

/// One worker's translator for one Bergamot model.
///
/// The weights are shared by every translator of the same model (see [`shared_engine`]);
/// what belongs to a worker, the activation scratch, lives in `fxtranslate`'s thread-locals.
pub struct BergamotTranslator {
    engine: &'static Engine,
    source: String,
    target: String,
    /// `bergamot <src>-<tgt> (<dir>)`, for error messages.
    model: String,
}

impl BergamotTranslator {
    /// Load the model in `model_dir` (translating `source` → `target`), or reuse it if
    /// another worker already did.
    pub fn load(model_dir: &Path, source: &str, target: &str) -> Result<Self, TranslateError> {
        let model = format!("bergamot {source}-{target} ({})", model_dir.display());
        let engine = shared_engine(model_dir, &model)?;
        Ok(Self {
            engine,
            source: source.to_string(),
            target: target.to_string(),
            model,
        })
    }
}

impl Translator for BergamotTranslator {
    fn translate(&mut self, text: &str) -> Result<String, TranslateError> {
        if text.trim().is_empty() {
            return Ok(String::new());
        }
        let engine = self.engine;
        // `translate_long` splits sentences first: the model's context is 128 tokens, and
        // longer input would silently lose its tail. `fxtranslate` indexes its tables with
        // token ids and panics rather than returning errors; a panic must fail this request,
        // not kill the worker. Unwind safety: the engine is immutable after load, and a
        // thread-local scratch borrow is released while unwinding.
        panic::catch_unwind(AssertUnwindSafe(|| engine.translate_long(text)))
            .map(|out| out.trim().to_string())
            .map_err(|payload| TranslateError::BergamotTranslate {
                model: self.model.clone(),
                reason: panic_message(payload.as_ref()),
            })
    }

    fn pair(&self) -> (&str, &str) {
        (&self.source, &self.target)
    }
}

/// The engine for `model_dir`, loaded once per process.
///
/// `fxtranslate`'s engine is `Sync` but not `Send` (its packed GEMM weights are raw
/// pointers that must not be freed on another thread), so a worker cannot own one and
/// still be a `Send` [`Translator`]. A shared `&'static` reference is `Send`, and sharing
/// also keeps one copy of the weights however many workers there are. Engines are leaked:
/// a server keeps its few models for its whole life.
fn shared_engine(model_dir: &Path, model: &str) -> Result<&'static Engine, TranslateError> {
    static ENGINES: OnceLock<Mutex<HashMap<PathBuf, &'static Engine>>> = OnceLock::new();
    let key = model_dir
        .canonicalize()
        .unwrap_or_else(|_| model_dir.to_path_buf());
    // Held while loading, so workers starting together load a model once, not once each.
    // A panic while holding it cannot leave the map half-written, hence `into_inner`.
    let mut engines = ENGINES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(engine) = engines.get(&key) {
        return Ok(engine);
    }
    let engine: &'static Engine = Box::leak(Box::new(load_engine(model_dir, model)?));
    tracing::info!(
        model,
        gemm = fxtranslate::gemm::backend(),
        "loaded translation model"
    );
    engines.insert(key, engine);
    Ok(engine)
}

fn load_engine(dir: &Path, model: &str) -> Result<Engine, TranslateError> {
    let error = |step, reason| TranslateError::BergamotLoad {
        model: model.to_string(),
        step,
        reason,
    };
    let files = ModelFiles::find(dir).map_err(|reason| error("find its files", reason))?;
    let shortlist = files
        .shortlist
        .as_ref()
        .map(|path| fs::read(path).map_err(|e| error("read the shortlist", e.to_string())))
        .transpose()?;
    // The readers slice the files at offsets taken from their headers and panic on a
    // truncated or foreign file; that must be a load error, not a crash.
    panic::catch_unwind(|| {
        let engine = Engine::load(&files.model, &files.src_vocab, &files.trg_vocab)?;
        Ok(match &shortlist {
            // Without a shortlist the decoder scores the whole vocabulary at every step:
            // the same translations, only slower.
            Some(bytes) => engine.with_shortlist(Shortlist::from_bytes(bytes)),
            None => engine,
        })
    })
    .unwrap_or_else(|payload| Err(panic_message(payload.as_ref())))
    .map_err(|reason| error("read the model, vocabulary and shortlist", reason))
}

/// The files of one model directory, found by the names Bergamot releases use.
struct ModelFiles {
    model: PathBuf,
    src_vocab: PathBuf,
    trg_vocab: PathBuf,
    shortlist: Option<PathBuf>,
}

impl ModelFiles {
    fn find(dir: &Path) -> Result<Self, String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        let first = |prefix: &str, suffix: &str| {
            names
                .iter()
                .find(|n| n.starts_with(prefix) && n.ends_with(suffix))
                .map(|n| dir.join(n))
        };
        let model = first("model.", ".bin").ok_or("no model.*.bin")?;
        // Pairs whose scripts differ (CJK) ship one vocabulary per side; the others share one.
        let (src_vocab, trg_vocab) = match (first("srcvocab.", ".spm"), first("trgvocab.", ".spm"))
        {
            (Some(src), Some(trg)) => (src, trg),
            _ => {
                let shared = first("vocab.", ".spm").ok_or("no vocab.*.spm")?;
                (shared.clone(), shared)
            }
        };
        Ok(Self {
            model,
            src_vocab,
            trg_vocab,
            shortlist: first("lex.", ".s2t.bin"),
        })
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the engine panicked".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_corrupt_models_are_load_errors() {
        let dir = std::env::temp_dir().join(format!("tolk-bergamot-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let err = BergamotTranslator::load(&dir, "de", "en")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("bergamot de-en") && err.contains("no model.*.bin"),
            "{err}"
        );

        fs::write(dir.join("model.deen.intgemm.alphas.bin"), b"not a model").unwrap();
        fs::write(dir.join("vocab.deen.spm"), b"not a vocabulary").unwrap();
        fs::write(dir.join("lex.50.50.deen.s2t.bin"), b"short").unwrap();
        let err = BergamotTranslator::load(&dir, "de", "en")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("cannot load Bergamot model bergamot de-en"),
            "{err}"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}

//! Text translation on the real Bergamot models installed by `models/fetch` and the real
//! Debian Apertium pair (apertium-eng-spa). Missing models fail: they are part of the setup.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tolk_models::registry::APERTIUM_MODES;
use tolk_models::translate::{open, Backend, TranslationCatalog, Translator};

/// The models directory: `$TOLK_MODELS_DIR`, else `models/cache` in this crate.
fn models_dir() -> PathBuf {
    let dir = std::env::var_os("TOLK_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("cache"));
    for pair in ["enpt", "pten"] {
        assert!(
            dir.join(format!("bergamot/{pair}/model.{pair}.intgemm.alphas.bin"))
                .is_file(),
            "the Bergamot {pair} model is not installed in {}: run models/fetch",
            dir.display()
        );
    }
    dir
}

fn catalog() -> TranslationCatalog {
    for mode in ["eng-spa", "spa-eng"] {
        assert!(
            Path::new(APERTIUM_MODES)
                .join(format!("{mode}.mode"))
                .is_file(),
            "Apertium {mode} is not installed: run models/fetch (it installs apertium-eng-spa)"
        );
    }
    TranslationCatalog::discover(&models_dir(), Path::new(APERTIUM_MODES))
}

fn translator(source: &str, target: &str) -> Box<dyn Translator> {
    let route = catalog()
        .route(source, target)
        .unwrap_or_else(|| panic!("no route {source}→{target}"));
    open(&route).unwrap_or_else(|e| panic!("open {route}: {e}"))
}

fn translate(source: &str, target: &str, text: &str) -> String {
    let out = translator(source, target)
        .translate(text)
        .unwrap_or_else(|e| panic!("{source}→{target}: {e}"));
    eprintln!("{source}→{target}: {text:?} → {out:?}");
    out
}

fn assert_contains_all(out: &str, words: &[&str]) {
    let lower = out.to_lowercase();
    for word in words {
        assert!(lower.contains(word), "{out:?} lacks {word:?}");
    }
}

#[test]
fn catalog_finds_the_installed_pairs() {
    let catalog = catalog();
    let pairs = catalog.pairs();
    for (source, target, backend) in [
        ("en", "pt", Backend::Bergamot),
        ("pt", "en", Backend::Bergamot),
        ("en", "es", Backend::Apertium),
        ("es", "en", Backend::Apertium),
    ] {
        assert!(
            pairs.contains(&(source.into(), target.into(), backend)),
            "{source}→{target} ({backend}) not in {pairs:?}"
        );
    }
    for language in ["en", "es", "pt"] {
        assert!(catalog.languages().iter().any(|l| l == language));
    }
    assert_eq!(catalog.route("xx", "en"), None);
    assert_eq!(catalog.route("en", "xx"), None);

    let direct = catalog.route("en", "pt").unwrap();
    assert!(!direct.pivot() && direct.via().is_none());
    assert_eq!(direct.hops[0].backend, Backend::Bergamot);

    let pivot = catalog.route("es", "pt").unwrap();
    assert!(pivot.pivot());
    assert_eq!(pivot.via(), Some("en"));
    assert_eq!(
        pivot.hops.iter().map(|h| h.backend).collect::<Vec<_>>(),
        [Backend::Apertium, Backend::Bergamot]
    );
    assert_eq!(pivot.to_string(), "es→en (apertium) →pt (bergamot)");
}

#[test]
fn bergamot_english_to_portuguese() {
    let out = translate("en", "pt", "The house is big and the cat is black.");
    assert_contains_all(&out, &["casa", "gato"]);
    assert_eq!(translator("en", "pt").pair(), ("en", "pt"));
}

#[test]
fn bergamot_portuguese_to_english() {
    let out = translate("pt", "en", "Eu gosto de comer pão.");
    assert_contains_all(&out, &["bread"]);
}

#[test]
fn bergamot_translates_every_sentence() {
    let out = translate(
        "en",
        "pt",
        "The house is big. The cat is black. I like to eat bread.",
    );
    assert_contains_all(&out, &["casa", "gato", "pão"]);
}

#[test]
fn apertium_english_to_spanish() {
    let out = translate("en", "es", "The dog eats the apple.");
    assert_contains_all(&out, &["perro", "manzana"]);
}

#[test]
fn apertium_spanish_to_english() {
    let out = translate("es", "en", "El perro come la manzana.");
    assert_contains_all(&out, &["dog", "apple"]);
}

#[test]
fn spanish_to_portuguese_pivots_through_english() {
    let mut translator = translator("es", "pt");
    assert_eq!(translator.pair(), ("es", "pt"));
    let out = translator.translate("El perro come la manzana.").unwrap();
    eprintln!("es→en→pt: \"El perro come la manzana.\" → {out:?}");
    let lower = out.to_lowercase();
    assert!(
        lower.contains("cão") || lower.contains("cachorro"),
        "{out:?} has no dog"
    );
    assert!(lower.contains("maçã"), "{out:?} has no apple");
}

#[test]
fn apertium_marks_never_reach_users() {
    // "Zorblax" is unknown (`*`); Apertium's Spanish generator has no form for "vessel"
    // (`#vaso`), nor its English one for "remueve" (`#stir`).
    for (source, target, text, kept) in [
        ("en", "es", "Zorblax sees the vessel.", ["zorblax", "vaso"]),
        (
            "es",
            "en",
            "Zorblax remueve el café.",
            ["zorblax", "coffee"],
        ),
    ] {
        let out = translate(source, target, text);
        assert_contains_all(&out, &kept);
        assert!(!out.contains(['*', '#', '@', '~']), "{out:?} has marks");
    }
}

#[test]
fn blank_input_is_blank_output() {
    for (source, target) in [("en", "pt"), ("en", "es"), ("es", "pt")] {
        assert_eq!(translator(source, target).translate("  \n").unwrap(), "");
    }
}

/// Per-sentence latency with the model loaded, for BENCHMARKS.md. Run alone for clean
/// figures: `cargo test --release -p tolk-models --test translate -- latency --nocapture`.
#[test]
fn latency_per_sentence() {
    let sentence = "The house is big and the cat is black.";
    for (source, target, text) in [
        ("en", "pt", sentence),
        ("pt", "en", "Eu gosto de comer pão."),
        ("en", "es", sentence),
        ("es", "pt", "El perro come la manzana."),
    ] {
        let start = Instant::now();
        let mut translator = translator(source, target);
        translator.translate(text).unwrap();
        let first = start.elapsed();
        let runs = 5;
        let mut times: Vec<Duration> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                translator.translate(text).unwrap();
                start.elapsed()
            })
            .collect();
        times.sort();
        eprintln!(
            "{source}→{target}: load + first sentence {:.0} ms; per sentence median {:.1} ms, min {:.1} ms ({runs} runs, {} words)",
            first.as_secs_f64() * 1e3,
            times[runs / 2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            text.split_whitespace().count()
        );
    }
}

#[test]
fn a_truncated_shortlist_is_a_load_error_not_a_crash() {
    let real = models_dir().join("bergamot/enpt");
    let dir = std::env::temp_dir().join(format!("tolk-bad-lex-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["model.enpt.intgemm.alphas.bin", "vocab.enpt.spm"] {
        std::os::unix::fs::symlink(real.join(file), dir.join(file)).unwrap();
    }
    std::fs::write(dir.join("lex.50.50.enpt.s2t.bin"), [7u8; 20]).unwrap();
    let err = tolk_models::translate::BergamotTranslator::load(&dir, "en", "pt")
        .err()
        .expect("a 20-byte shortlist must not load");
    eprintln!("{err}");
    assert!(err
        .to_string()
        .contains("cannot load Bergamot model bergamot en-pt"));
    std::fs::remove_dir_all(dir).unwrap();
}

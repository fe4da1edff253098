//! `tolk models`: what models/fetch installed, by role, with languages and pairs.

mod common;

use common::run;
use tolk_protocol::catalog::{LanguagePair, ModelsResponse, Role};

fn pair(source: &str, target: &str) -> LanguagePair {
    LanguagePair {
        source: source.into(),
        target: target.into(),
    }
}

#[test]
fn lists_every_installed_role_with_its_languages() {
    let (code, out, err) = run(&["models", "--json"]);
    assert_eq!(code, 0, "{err}");
    let listing: ModelsResponse = serde_json::from_str(&out).unwrap();
    let find = |name: &str| {
        listing
            .models
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} in {out}"))
    };

    let base = find("base");
    assert_eq!(base.role, Role::Asr);
    assert!(base.languages.len() >= 99 && base.languages.contains(&"pt".to_string()));
    assert_eq!(
        base.pairs,
        [pair("*", "en")],
        "speech translation to English"
    );
    assert_eq!(find("tiny.en").languages, ["en"]);
    assert_eq!(find("silero_vad").role, Role::Vad);
    assert_eq!(find("en_US-joe-medium").languages, ["en"]);
    assert_eq!(find("bergamot-en-pt").pairs, [pair("en", "pt")]);
    assert_eq!(find("bergamot-pt-en").pairs, [pair("pt", "en")]);
    assert_eq!(find("apertium-eng-spa").pairs, [pair("en", "es")]);
    assert_eq!(find("apertium-spa-eng").pairs, [pair("es", "en")]);
    let espeak = find("espeak-ng");
    assert!(["en", "es", "pt", "de"]
        .iter()
        .all(|l| espeak.languages.contains(&l.to_string())));
    assert_eq!(find("onnxruntime").details.as_deref(), Some("1.31.1"));

    let (code, table, _) = run(&["models"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("Speech recognition:")
            && table.contains("en→pt")
            && table.contains("any→en"),
        "{table}"
    );
}

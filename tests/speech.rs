//! `tolk speak`: synthesized speech that whisper understands again.

mod common;

use common::{normalize, run, scratch, word_errors};

#[test]
fn spoken_english_transcribes_back() {
    let dir = scratch("speak");
    let wav = dir.join("ask-not.wav");
    let text = "Ask not what your country can do for you. Ask what you can do for your country.";
    let (code, _, err) = run(&[
        "speak",
        "--lang",
        "en",
        "--output",
        wav.to_str().unwrap(),
        text,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, heard, err) = run(&["transcribe", wav.to_str().unwrap(), "--language", "en"]);
    assert_eq!(code, 0, "{err}");
    let (heard, said) = (normalize(&heard), normalize(text));
    assert!(
        word_errors(&heard, &said) * 10 <= said.split(' ').count(),
        "WER > 10 %: {heard}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn languages_without_a_piper_voice_use_espeak_and_unknown_ones_are_refused() {
    let dir = scratch("speak-es");
    let wav = dir.join("hola.wav");
    let (code, _, err) = run(&[
        "speak",
        "--lang",
        "es",
        "--output",
        wav.to_str().unwrap(),
        "Hola, ¿cómo estás?",
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, heard, _) = run(&["transcribe", wav.to_str().unwrap(), "--language", "es"]);
    assert!(normalize(&heard).contains("estás"), "{heard}");
    let (code, _, err) = run(&[
        "speak",
        "--lang",
        "xx",
        "--output",
        wav.to_str().unwrap(),
        "hi",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no voice speaks 'xx'") && err.contains(" es,"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

//! Speech synthesis on the real Piper voice, ONNX Runtime and espeak-ng installed by
//! `models/fetch`, checked by ear through the real Whisper model.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tolk_models::asr::{RecognizeOptions, Recognizer, SAMPLE_RATE};
use tolk_models::resample::resample;
use tolk_models::tts::phonemize::{self, Terminator};
use tolk_models::tts::piper::{BOS, EOS, PAD};
use tolk_models::tts::{
    open, synthesize_wav, EspeakVoice, PiperVoice, Synthesizer, TtsError, VoiceCatalog, VoiceChoice,
};
use tolk_models::vad::init_onnxruntime;
use tolk_models::wav;
use tolk_models::whisper::{WhisperConfig, WhisperModel};

const VOICE: &str = "piper/en_US-joe-medium.onnx";
const TWO_SENTENCES: &str =
    "The quick brown fox jumps over the lazy dog. Ask not what your country can do for you.";

/// The models directory: `$TOLK_MODELS_DIR`, else `models/cache` in this crate.
fn models_dir() -> PathBuf {
    let dir = std::env::var_os("TOLK_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("cache"));
    for needed in [VOICE, "whisper/ggml-base-q4_0.bin"] {
        assert!(
            dir.join(needed).is_file(),
            "{needed} is not installed in {}: run models/fetch",
            dir.display()
        );
    }
    dir
}

fn piper(threads: usize) -> PiperVoice {
    let dir = models_dir();
    init_onnxruntime(&dir).expect("load ONNX Runtime");
    PiperVoice::load(&dir.join(VOICE), threads).expect("load the Piper voice")
}

fn rms(samples: &[f32]) -> f32 {
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
}

/// Lower-case words, punctuation turned into spaces as Whisper's own text normalizer does
/// (so "quick-brown" is two words, as it was said).
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Word error rate: word-level edit distance over the reference length.
fn wer(reference: &str, hypothesis: &str) -> f32 {
    let (r, h) = (words(reference), words(hypothesis));
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, hw) in h.iter().enumerate() {
            let substitution = diagonal + usize::from(rw != hw);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[h.len()] as f32 / r.len().max(1) as f32
}

#[test]
fn piper_speech_is_transcribed_back_by_whisper() {
    let mut voice = piper(1);
    let started = Instant::now();
    let bytes = synthesize_wav(&mut voice, TWO_SENTENCES).expect("synthesize");
    let elapsed = started.elapsed().as_secs_f32();
    let pcm = wav::decode(&bytes).expect("a WAV file");
    let seconds = pcm.frames() as f32 / pcm.sample_rate as f32;
    eprintln!(
        "Piper en_US-joe-medium, 1 thread: {seconds:.2} s of audio in {elapsed:.2} s, RTF {:.3}",
        elapsed / seconds
    );

    let audio = resample(&pcm.samples, pcm.sample_rate, SAMPLE_RATE);
    let config = WhisperConfig {
        threads: 2,
        ..WhisperConfig::default()
    };
    let model = WhisperModel::load(&models_dir().join("whisper/ggml-base-q4_0.bin"), config)
        .expect("load whisper base-q4_0");
    let options = RecognizeOptions {
        language: Some("en".into()),
        ..RecognizeOptions::default()
    };
    let transcript = model
        .worker()
        .expect("whisper worker")
        .recognize(&audio, &options)
        .expect("transcribe");
    let error = wer(TWO_SENTENCES, &transcript.text);
    eprintln!(
        "whisper heard: {:?} (WER {:.1} %)",
        transcript.text,
        error * 100.0
    );
    assert!(error <= 0.10, "WER {error}: heard {:?}", transcript.text);
}

#[test]
fn each_sentence_is_its_own_speech_of_plausible_length() {
    let mut voice = piper(1);
    let speech = voice.synthesize(TWO_SENTENCES).expect("synthesize");
    let sentences: Vec<&str> = speech.iter().map(|s| s.sentence.as_str()).collect();
    assert_eq!(
        sentences,
        [
            "The quick brown fox jumps over the lazy dog.",
            "Ask not what your country can do for you."
        ]
    );
    for s in &speech {
        let seconds = s.samples.len() as f32 / voice.sample_rate() as f32;
        let per_word = seconds / words(&s.sentence).len() as f32;
        assert!(rms(&s.samples) > 0.01, "{:?} is silent", s.sentence);
        assert!(
            (0.2..=0.6).contains(&per_word),
            "{:?}: {seconds:.2} s, {per_word:.2} s per word",
            s.sentence
        );
    }
}

#[test]
fn streaming_hands_out_sentences_one_by_one_and_can_stop() {
    let mut voice = piper(1);
    let mut heard = Vec::new();
    voice
        .synthesize_each(TWO_SENTENCES, &mut |speech| {
            heard.push(speech.sentence);
            std::ops::ControlFlow::Break(())
        })
        .expect("synthesize");
    assert_eq!(heard, ["The quick brown fox jumps over the lazy dog."]);
}

#[test]
fn phoneme_ids_are_framed_and_padded_as_piper_does() {
    let voice = piper(1);
    let sentences = voice.phonemize("Hello, world!").expect("phonemize");
    assert_eq!(sentences.len(), 1);
    let phonemes: String = sentences[0].phonemes.iter().collect();
    assert_eq!(phonemes, "həlˈoʊ, wˈɜːld!");

    let config = voice.config();
    let id = |c: char| config.phoneme_ids(&[c])[2];
    let ids = config.phoneme_ids(&sentences[0].phonemes);
    let (bos, eos, pad) = (
        config.phoneme_ids(&[])[0],
        *config.phoneme_ids(&[]).last().unwrap(),
        config.phoneme_ids(&[])[1],
    );
    assert_eq!((bos, eos, pad), (1, 2, 0), "this voice's ^ $ _");
    assert_eq!(ids.first(), Some(&bos), "{ids:?}");
    assert_eq!(ids.last(), Some(&eos), "{ids:?}");
    assert_eq!(ids.len(), 2 * sentences[0].phonemes.len() + 3);
    // ^ _ p1 _ p2 _ … pn _ $
    for (i, &phoneme) in sentences[0].phonemes.iter().enumerate() {
        assert_eq!(ids[2 + 2 * i], id(phoneme), "phoneme {phoneme:?}");
        assert_eq!(ids[3 + 2 * i], pad);
    }
    assert_eq!([BOS, EOS, PAD], ['^', '$', '_']);
}

/// Our clauses say what `espeak-ng -q --ipa` says, line for line (the command prints one
/// line per clause), with the mark that ended each clause recovered.
#[test]
fn phonemes_match_the_espeak_ng_command() {
    let cases: [(&str, &str, &[Terminator]); 5] = [
        (
            "en-us",
            TWO_SENTENCES,
            &[Terminator::Period, Terminator::Period],
        ),
        (
            "en-us",
            "Hello, world! How are you? Fine; thanks: really.",
            &[
                Terminator::Comma,
                Terminator::Exclamation,
                Terminator::Question,
                Terminator::Semicolon,
                Terminator::Colon,
                Terminator::Period,
            ],
        ),
        (
            "en-us",
            "Dr. Smith paid $3.50 for it, e.g. today. He said \"hi.\" Then (quietly) left...",
            &[
                Terminator::Period,
                Terminator::Comma,
                Terminator::Period,
                Terminator::Period,
                Terminator::None,
            ],
        ),
        (
            "en-us",
            "Line one\nline two\n\nA new paragraph",
            &[Terminator::None, Terminator::None],
        ),
        (
            "es",
            "Hola, ¿cómo estás? Muy bien.",
            &[Terminator::Comma, Terminator::Question, Terminator::Period],
        ),
    ];
    for (voice, text, terminators) in cases {
        let output = Command::new("espeak-ng")
            .args(["-q", "--ipa", "-v", voice, text])
            .output()
            .expect("run espeak-ng");
        let command: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        let clauses = phonemize::clauses(voice, text).expect("phonemize");
        let ours: Vec<String> = clauses
            .iter()
            .map(|c| c.phonemes.trim().to_string())
            .collect();
        assert_eq!(ours, command, "{text:?}");
        let ends: Vec<Terminator> = clauses.iter().map(|c| c.terminator).collect();
        assert_eq!(ends, terminators, "{text:?}");
    }
}

/// The marks espeak-ng reports, read back from clause texts as it cuts them.
#[test]
fn clause_marks_are_read_back_as_espeak_ng_reports_them() {
    let cases = [
        ("dog. ", (Terminator::Period, true)),
        ("you?! ", (Terminator::Question, true)),
        ("Hello, ", (Terminator::Comma, false)),
        ("Wait... ", (Terminator::None, false)),
        ("word — ", (Terminator::Semicolon, false)),
        ("Hola ¿", (Terminator::None, false)),
        ("你好。", (Terminator::None, true)),
        ("line two\n\n", (Terminator::None, true)),
        ("Hello.\n\n", (Terminator::None, true)),
        ("no mark", (Terminator::None, false)),
        ("  ", (Terminator::None, false)),
    ];
    for (clause, expected) in cases {
        assert_eq!(phonemize::classify(clause), expected, "{clause:?}");
    }
}

#[test]
fn language_switch_flags_are_dropped() {
    // The French voice reads "one" with English rules: "(en)wˈɒn(fr)".
    let text = "Il a dit one.";
    let raw = phonemize::clauses("fr-fr", text).expect("phonemize");
    assert!(raw[0].phonemes.contains("(en)"), "{raw:?}");
    let sentences = phonemize::phonemize("fr-fr", text).expect("phonemize");
    let phonemes: String = sentences[0].phonemes.iter().collect();
    assert!(!phonemes.contains(['(', ')']), "{phonemes}");
}

#[test]
fn sentences_end_where_piper_ends_them() {
    let text = "Dr. Smith is here, isn't he? Yes!\n\nNew paragraph";
    let sentences = phonemize::sentences("en-us", text).expect("sentences");
    assert_eq!(
        sentences,
        ["Dr.", "Smith is here, isn't he?", "Yes!", "New paragraph"]
    );
    let ours: Vec<String> = phonemize::phonemize("en-us", text)
        .expect("phonemize")
        .iter()
        .map(|s| s.phonemes.iter().collect())
        .collect();
    assert_eq!(ours[1], "smˈɪθ ɪz hˈɪɹ, ˈɪzənt hiː?");
    assert!(
        !ours[3].ends_with('.'),
        "a paragraph keeps no mark: {:?}",
        ours[3]
    );
}

#[test]
fn espeak_ng_speaks_spanish() {
    let catalog = VoiceCatalog::discover(&models_dir());
    let choice = catalog.voice_for("es").expect("a voice for Spanish");
    assert!(
        matches!(&choice, VoiceChoice::Espeak { voice, .. } if voice == "es"),
        "{choice:?}"
    );
    let mut voice = open(&choice).expect("open espeak-ng");
    assert_eq!((voice.sample_rate(), voice.language()), (22_050, "es"));
    let speech = voice.synthesize("Hola, ¿cómo estás?").expect("synthesize");
    assert_eq!(speech.len(), 1, "{speech:?}");
    assert_eq!(speech[0].sentence, "Hola, ¿cómo estás?");
    let seconds = speech[0].samples.len() as f32 / 22_050.0;
    assert!((0.5..3.0).contains(&seconds), "{seconds} s");
    assert!(rms(&speech[0].samples) > 0.01);
}

#[test]
fn english_gets_the_piper_voice_and_other_regions_fall_back_sensibly() {
    let catalog = VoiceCatalog::discover(&models_dir());
    let piper = |lang: &str| match catalog.voice_for(lang) {
        Some(VoiceChoice::Piper { voice, .. }) => voice.name,
        other => panic!("{lang}: {other:?}"),
    };
    assert_eq!(piper("en"), "en_US-joe-medium");
    assert_eq!(piper("en_US"), "en_US-joe-medium");
    assert_eq!(piper("EN-gb"), "en_US-joe-medium");
    let espeak = |lang: &str| match catalog.voice_for(lang) {
        Some(VoiceChoice::Espeak { voice, .. }) => voice,
        other => panic!("{lang}: {other:?}"),
    };
    assert_eq!(espeak("zh"), "zh");
    assert_eq!(espeak("pt-BR"), "pt-br");
    assert_eq!(espeak("de-AT"), "de");
    assert!(catalog.languages().contains(&"es".to_string()));
}

#[test]
fn unknown_languages_and_voices_are_clear_errors() {
    let catalog = VoiceCatalog::discover(&models_dir());
    assert!(catalog.voice_for("xx").is_none());
    let err = catalog
        .open("xx")
        .err()
        .expect("no voice for xx")
        .to_string();
    assert!(
        err.contains("'xx'") && err.contains("es") && err.contains("en"),
        "{err}"
    );

    for bad in ["qq", "-w/tmp/x", ""] {
        let err = EspeakVoice::new(bad, "qq").expect_err(bad);
        assert!(matches!(err, TtsError::UnknownVoice { .. }), "{bad}: {err}");
    }
    let err = phonemize::clauses("qq", "hello").unwrap_err().to_string();
    assert!(err.contains("'qq'"), "{err}");
}

#[test]
fn a_missing_voice_config_names_the_file() {
    let dir = std::env::temp_dir().join(format!("tolk-tts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("xx_XX-nobody-low.onnx");
    std::fs::write(&model, b"not a model").unwrap();
    init_onnxruntime(&models_dir()).expect("load ONNX Runtime");
    let err = PiperVoice::load(&model, 1)
        .err()
        .expect("no config")
        .to_string();
    assert!(err.contains("xx_XX-nobody-low.onnx.json"), "{err}");
    std::fs::write(
        dir.join("xx_XX-nobody-low.onnx.json"),
        br#"{"espeak": {"voice": "en-us"}, "phoneme_id_map": {"^": [1], "$": [2], "_": [0]}}"#,
    )
    .unwrap();
    let err = PiperVoice::load(&model, 1)
        .err()
        .expect("not a model")
        .to_string();
    assert!(
        err.contains("cannot load Piper voice") && err.contains("xx_XX-nobody-low.onnx"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn synthesize_wav_writes_16_bit_audio() {
    let mut voice = piper(1);
    let bytes = synthesize_wav(&mut voice, "Hello there. Goodbye.").expect("synthesize");
    let pcm = wav::decode(&bytes).expect("a WAV file");
    assert_eq!((pcm.sample_rate, pcm.channels), (22_050, 1));
    assert!(pcm.duration_ms() > 1000, "{} ms", pcm.duration_ms());
}

/// Real-time factor of Piper by thread count, for BENCHMARKS.md.
#[test]
fn piper_real_time_factor() {
    for threads in [1, 2] {
        let mut voice = piper(threads);
        voice.synthesize("Warm up.").expect("synthesize");
        let started = Instant::now();
        let speech = voice.synthesize(TWO_SENTENCES).expect("synthesize");
        let elapsed = started.elapsed().as_secs_f32();
        let seconds = speech.iter().map(|s| s.samples.len()).sum::<usize>() as f32
            / voice.sample_rate() as f32;
        eprintln!(
            "Piper RTF, {threads} thread(s): {:.3} ({seconds:.2} s of audio in {elapsed:.3} s)",
            elapsed / seconds
        );
    }
}

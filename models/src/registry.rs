//! The model registry: what is installed under the models directory (and on the system),
//! and which languages and language pairs each role offers.
//!
//! Nothing is hard-coded to a file name: any ggml Whisper model in `whisper/`, any Piper
//! voice in `piper/`, any Bergamot model directory in `bergamot/` and any Apertium pair
//! installed on the system is found.
//!
//! Layout of the models directory (written by `models/fetch`):
//! ```text
//! whisper/ggml-<name>.bin            ASR
//! vad/silero_vad.onnx                VAD
//! piper/<voice>.onnx + .onnx.json    TTS
//! bergamot/<src><tgt>/model.<src><tgt>.*.bin, vocab, lex, config   MT
//! onnxruntime/libonnxruntime.so.<version>                          runtime
//! ```

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use tolk_protocol::catalog::{LanguagePair, ModelInfo, Role};

use crate::whisper::{all_languages, model_name};

/// Environment variable naming the models directory.
pub const MODELS_DIR_ENV: &str = "TOLK_MODELS_DIR";
/// Default models directory, relative to the working directory.
pub const DEFAULT_MODELS_DIR: &str = "models/cache";
/// Where Debian's apertium packages install their translation modes.
pub const APERTIUM_MODES: &str = "/usr/share/apertium/modes";

/// The models directory: `$TOLK_MODELS_DIR`, else `models/cache`.
pub fn models_dir() -> PathBuf {
    std::env::var_os(MODELS_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODELS_DIR))
}

/// Facts read from a ggml Whisper file's header, without loading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgmlHeader {
    pub n_vocab: i32,
    pub n_audio_layer: i32,
    pub n_text_state: i32,
    pub ftype: i32,
}

impl GgmlHeader {
    pub fn read(path: &Path) -> Option<Self> {
        let mut buf = [0u8; 48];
        fs::File::open(path).ok()?.read_exact(&mut buf).ok()?;
        let i32_at = |i: usize| {
            i32::from_le_bytes([buf[i * 4], buf[i * 4 + 1], buf[i * 4 + 2], buf[i * 4 + 3]])
        };
        if u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) != 0x6767_6d6c {
            return None;
        }
        // magic, n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer,
        // n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype
        Some(Self {
            n_vocab: i32_at(1),
            n_audio_layer: i32_at(5),
            n_text_state: i32_at(7),
            ftype: i32_at(11),
        })
    }

    /// whisper.cpp's own test: multilingual vocabularies have at least 51865 tokens.
    pub fn is_multilingual(&self) -> bool {
        self.n_vocab >= 51_865
    }

    pub fn size_name(&self) -> &'static str {
        match self.n_audio_layer {
            4 => "tiny",
            6 => "base",
            12 => "small",
            24 => "medium",
            32 => "large",
            _ => "unknown size",
        }
    }

    pub fn weight_type(&self) -> &'static str {
        match self.ftype % 1000 {
            0 => "f32",
            1 => "f16",
            2 => "q4_0",
            3 => "q4_1",
            7 => "q8_0",
            8 => "q5_0",
            9 => "q5_1",
            _ => "quantized",
        }
    }
}

/// Everything installed.
#[derive(Debug, Clone)]
pub struct Registry {
    pub dir: PathBuf,
    pub models: Vec<ModelInfo>,
}

impl Registry {
    pub fn scan(dir: &Path) -> Self {
        let mut models = Vec::new();
        models.extend(whisper_models(dir));
        models.extend(vad_models(dir));
        models.extend(bergamot_models(dir));
        models.extend(apertium_pairs(Path::new(APERTIUM_MODES)));
        models.extend(piper_voices(dir));
        models.extend(espeak_voices());
        models.extend(runtimes(dir));
        Self {
            dir: dir.to_path_buf(),
            models,
        }
    }

    pub fn by_role(&self, role: Role) -> impl Iterator<Item = &ModelInfo> {
        self.models.iter().filter(move |m| m.role == role)
    }
}

/// Resolve `--model`: an existing file path, or a name such as `base` or `tiny.en` looked
/// up as `whisper/ggml-<name>.bin` in the models directory.
pub fn resolve_whisper_model(dir: &Path, name_or_path: &str) -> Result<PathBuf, String> {
    let as_path = Path::new(name_or_path);
    if as_path.is_file() {
        return Ok(as_path.to_path_buf());
    }
    let candidate = dir.join("whisper").join(format!("ggml-{name_or_path}.bin"));
    if candidate.is_file() {
        return Ok(candidate);
    }
    let installed: Vec<String> = whisper_models(dir).into_iter().map(|m| m.name).collect();
    Err(if installed.is_empty() {
        format!(
            "no Whisper model '{name_or_path}': no models are installed in {} (run models/fetch, or set {MODELS_DIR_ENV})",
            dir.display()
        )
    } else {
        format!(
            "no Whisper model '{name_or_path}' in {}; installed: {}",
            dir.display(),
            installed.join(", ")
        )
    })
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn size_of(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.len())
}

fn whisper_models(dir: &Path) -> Vec<ModelInfo> {
    files_in(&dir.join("whisper"))
        .into_iter()
        .filter_map(|path| {
            let header = GgmlHeader::read(&path)?;
            let (languages, pairs) = if header.is_multilingual() {
                let any_to_english = LanguagePair {
                    source: "*".into(),
                    target: "en".into(),
                };
                (all_languages(), vec![any_to_english])
            } else {
                (vec!["en".to_string()], vec![])
            };
            Some(ModelInfo {
                name: model_name(&path),
                role: Role::Asr,
                engine: "whisper.cpp".into(),
                path: Some(path.display().to_string()),
                size_bytes: size_of(&path),
                languages,
                pairs,
                details: Some(format!(
                    "{}{}, {}",
                    header.size_name(),
                    if header.is_multilingual() {
                        " (multilingual; translates speech to English)"
                    } else {
                        " (English-only)"
                    },
                    header.weight_type()
                )),
            })
        })
        .collect()
}

fn vad_models(dir: &Path) -> Vec<ModelInfo> {
    files_in(&dir.join("vad"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .map(|path| ModelInfo {
            name: path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            role: Role::Vad,
            engine: "onnxruntime".into(),
            size_bytes: size_of(&path),
            path: Some(path.display().to_string()),
            languages: vec![],
            pairs: vec![],
            details: Some("16 kHz".into()),
        })
        .collect()
}

/// A Bergamot model directory holds `model.<src><tgt>.intgemm.alphas.bin`.
pub(crate) fn bergamot_models(dir: &Path) -> Vec<ModelInfo> {
    files_in(&dir.join("bergamot"))
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|model_dir| {
            let model = files_in(&model_dir).into_iter().find(|f| {
                let name = f.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with("model.") && name.ends_with(".bin")
            })?;
            let name = model.file_name()?.to_string_lossy().into_owned();
            let langs = name.strip_prefix("model.")?.split('.').next()?.to_string();
            if langs.len() != 4 || !langs.chars().all(|c| c.is_ascii_lowercase()) {
                return None;
            }
            let (source, target) = langs.split_at(2);
            Some(ModelInfo {
                name: format!("bergamot-{source}-{target}"),
                role: Role::Translation,
                engine: "bergamot".into(),
                path: Some(model_dir.display().to_string()),
                size_bytes: files_in(&model_dir)
                    .iter()
                    .filter_map(|f| size_of(f))
                    .reduce(|a, b| a + b),
                languages: vec![],
                pairs: vec![LanguagePair {
                    source: source.into(),
                    target: target.into(),
                }],
                details: Some("neural (Marian, int8)".into()),
            })
        })
        .collect()
}

/// ISO 639-3 (Apertium's codes) to ISO 639-1 (tolk's), for the languages Apertium pairs cover.
pub fn iso639_1(code: &str) -> Option<&'static str> {
    Some(match code {
        "eng" => "en",
        "spa" => "es",
        "por" => "pt",
        "cat" => "ca",
        "fra" => "fr",
        "ita" => "it",
        "deu" => "de",
        "glg" => "gl",
        "oci" => "oc",
        "eus" => "eu",
        "ron" => "ro",
        "nld" => "nl",
        "afr" => "af",
        "dan" => "da",
        "swe" => "sv",
        "nob" => "nb",
        "nno" => "nn",
        "isl" => "is",
        "epo" => "eo",
        "arg" => "an",
        "ast" => "ast",
        "bel" => "be",
        "rus" => "ru",
        "ukr" => "uk",
        "pol" => "pl",
        "ces" => "cs",
        "slk" => "sk",
        "hbs" => "sh",
        "mlt" => "mt",
        "ara" => "ar",
        "kaz" => "kk",
        "tat" => "tt",
        "cym" => "cy",
        "bre" => "br",
        "gle" => "ga",
        "sme" => "se",
        "fin" => "fi",
        "hin" => "hi",
        "urd" => "ur",
        _ => return None,
    })
}

/// Apertium translation modes: `<src>-<tgt>.mode`, with 639-3 codes (variants such as
/// `spa-eng_US` and debug modes are skipped).
pub fn apertium_pairs(modes: &Path) -> Vec<ModelInfo> {
    files_in(modes)
        .into_iter()
        .filter_map(|path| {
            let stem = path
                .file_name()?
                .to_str()?
                .strip_suffix(".mode")?
                .to_string();
            let (src, tgt) = stem.split_once('-')?;
            let (source, target) = (iso639_1(src)?, iso639_1(tgt)?);
            Some(ModelInfo {
                name: format!("apertium-{stem}"),
                role: Role::Translation,
                engine: "apertium".into(),
                path: Some(path.display().to_string()),
                size_bytes: None,
                languages: vec![],
                pairs: vec![LanguagePair {
                    source: source.into(),
                    target: target.into(),
                }],
                details: Some("rule-based".into()),
            })
        })
        .collect()
}

fn piper_voices(dir: &Path) -> Vec<ModelInfo> {
    files_in(&dir.join("piper"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .filter_map(|path| {
            let config_path = PathBuf::from(format!("{}.json", path.display()));
            let config: serde_json::Value =
                serde_json::from_slice(&fs::read(&config_path).ok()?).ok()?;
            let family = config["language"]["family"]
                .as_str()
                .or_else(|| {
                    config["espeak"]["voice"]
                        .as_str()
                        .and_then(|v| v.split('-').next())
                })?
                .to_string();
            let rate = config["audio"]["sample_rate"].as_u64().unwrap_or(22_050);
            Some(ModelInfo {
                name: path.file_stem()?.to_string_lossy().into_owned(),
                role: Role::Tts,
                engine: "piper (onnxruntime)".into(),
                size_bytes: size_of(&path),
                path: Some(path.display().to_string()),
                languages: vec![family],
                pairs: vec![],
                details: Some(format!("neural, {rate} Hz")),
            })
        })
        .collect()
}

/// espeak-ng's voices, as the languages (primary subtags) it can speak.
fn espeak_voices() -> Vec<ModelInfo> {
    let Ok(output) = Command::new("espeak-ng").arg("--voices").output() else {
        return vec![];
    };
    if !output.status.success() {
        return vec![];
    }
    let mut languages: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter_map(|lang| lang.split('-').next())
        .filter(|l| l.len() == 2 || l.len() == 3)
        .map(str::to_string)
        .collect();
    languages.sort();
    languages.dedup();
    vec![ModelInfo {
        name: "espeak-ng".into(),
        role: Role::Tts,
        engine: "espeak-ng".into(),
        path: None,
        size_bytes: None,
        languages,
        pairs: vec![],
        details: Some("formant synthesis, 22050 Hz".into()),
    }]
}

fn runtimes(dir: &Path) -> Vec<ModelInfo> {
    files_in(&dir.join("onnxruntime"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so."))
        })
        .map(|path| ModelInfo {
            name: "onnxruntime".into(),
            role: Role::Runtime,
            engine: "onnxruntime".into(),
            size_bytes: size_of(&path),
            details: path.file_name().map(|n| {
                n.to_string_lossy()
                    .trim_start_matches("libonnxruntime.so.")
                    .to_string()
            }),
            path: Some(path.display().to_string()),
            languages: vec![],
            pairs: vec![],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tolk-registry-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn ggml_header(n_vocab: i32, layers: i32, ftype: i32) -> Vec<u8> {
        let mut b = 0x6767_6d6cu32.to_le_bytes().to_vec();
        for v in [
            n_vocab, 1500, 512, 8, layers, 448, 512, 8, layers, 80, ftype,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    #[test]
    fn finds_whatever_is_dropped_into_the_directory() {
        let dir = temp_dir("scan");
        fs::create_dir_all(dir.join("whisper")).unwrap();
        fs::write(
            dir.join("whisper/ggml-small-custom.bin"),
            ggml_header(51_865, 12, 2008),
        )
        .unwrap();
        fs::write(
            dir.join("whisper/ggml-tiny.en.bin"),
            ggml_header(51_864, 4, 1),
        )
        .unwrap();
        fs::write(dir.join("whisper/README.txt"), "not a model").unwrap();
        fs::create_dir_all(dir.join("piper")).unwrap();
        fs::write(dir.join("piper/de_DE-x-low.onnx"), b"onnx").unwrap();
        fs::write(
            dir.join("piper/de_DE-x-low.onnx.json"),
            r#"{"audio":{"sample_rate":16000},"language":{"family":"de"}}"#,
        )
        .unwrap();
        fs::create_dir_all(dir.join("bergamot/deen")).unwrap();
        fs::write(
            dir.join("bergamot/deen/model.deen.intgemm.alphas.bin"),
            b"x",
        )
        .unwrap();

        let reg = Registry::scan(&dir);
        let asr: Vec<_> = reg.by_role(Role::Asr).collect();
        assert_eq!(
            asr.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["small-custom", "tiny.en"]
        );
        assert!(asr[0].languages.len() > 90 && asr[0].pairs[0].target == "en");
        assert_eq!(
            asr[0].details.as_deref(),
            Some("small (multilingual; translates speech to English), q5_0")
        );
        assert_eq!(asr[1].languages, ["en"]);
        let voice = reg
            .by_role(Role::Tts)
            .find(|m| m.name == "de_DE-x-low")
            .unwrap();
        assert_eq!(voice.languages, ["de"]);
        let mt = reg
            .models
            .iter()
            .find(|m| m.name == "bergamot-de-en")
            .unwrap();
        assert_eq!(
            mt.pairs,
            [LanguagePair {
                source: "de".into(),
                target: "en".into()
            }]
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn apertium_modes_become_iso_639_1_pairs() {
        let dir = temp_dir("apertium");
        for mode in [
            "eng-spa.mode",
            "spa-eng.mode",
            "spa-eng_US.mode",
            "xxx-yyy.mode",
        ] {
            fs::write(dir.join(mode), "").unwrap();
        }
        let pairs: Vec<_> = apertium_pairs(&dir)
            .into_iter()
            .map(|m| m.pairs[0].clone())
            .collect();
        assert_eq!(
            pairs,
            [
                LanguagePair {
                    source: "en".into(),
                    target: "es".into()
                },
                LanguagePair {
                    source: "es".into(),
                    target: "en".into()
                }
            ]
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_model_names_list_what_is_installed() {
        let dir = temp_dir("resolve");
        let err = resolve_whisper_model(&dir, "large").unwrap_err();
        assert!(err.contains("no models are installed"), "{err}");
        fs::create_dir_all(dir.join("whisper")).unwrap();
        fs::write(dir.join("whisper/ggml-base.bin"), ggml_header(51_865, 6, 1)).unwrap();
        assert_eq!(
            resolve_whisper_model(&dir, "base").unwrap(),
            dir.join("whisper/ggml-base.bin")
        );
        let err = resolve_whisper_model(&dir, "large").unwrap_err();
        assert!(err.ends_with("installed: base"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }
}

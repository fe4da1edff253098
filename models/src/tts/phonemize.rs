//! Text to IPA phonemes with espeak-ng, cut into clauses and sentences the way Piper does.
//!
//! Piper voices were trained on espeak-ng's IPA for one clause at a time, with the mark that
//! ended the clause kept as a phoneme (`.` `?` `!`, or `,` `:` `;` followed by a space) and a
//! new sentence started after every sentence-ending mark. Piper gets the mark from
//! `espeak_TextToPhonemesWithTerminator`, a function of its own espeak-ng fork.
//!
//! Why the library (FFI) and not the `espeak-ng` command: `espeak-ng -q --ipa` prints one line
//! per clause but drops the mark that ended it, and nothing ties a line back to the text, so
//! the marks would have to be found again by re-implementing espeak-ng's clause rules ("Dr.
//! Smith" splits, "e.g. today" and "yes. a.b." do not, "Hola, ¿cómo" splits twice). The
//! library's `espeak_TextToPhonemes` returns one clause per call and advances a pointer
//! through the text, so espeak-ng itself decides every boundary and we only read which
//! character it stopped at. It also costs no process per request.
//!
//! Debian 12's espeak-ng (1.51) lacks the `…WithTerminator` variant, so [`classify`] reads
//! the mark back from the clause's text with espeak-ng's own table (readclause.c and its
//! Unicode properties), including Piper's quirks: a mark espeak-ng flags "no space needed
//! after" (`。`, `¿`, `…`) or a clause followed by a blank line gives no punctuation phoneme.
//!
//! The library is opened at run time (libloading), so the crate builds and everything but
//! TTS runs on a machine without it.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ops::Range;
use std::sync::{Mutex, MutexGuard, OnceLock};

use libloading::Library;
use unicode_normalization::UnicodeNormalization;

use super::TtsError;

const LIBRARY: &str = "libespeak-ng.so.1";
/// speak_lib.h: `AUDIO_OUTPUT_SYNCHRONOUS` (no audio thread; we only want phonemes),
/// `espeakINITIALIZE_DONT_EXIT` (return an error instead of `exit()` when data is missing),
/// `espeakCHARS_AUTO` (what Piper passes), `espeakPHONEMES_IPA`.
const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const INITIALIZE_DONT_EXIT: c_int = 0x8000;
const CHARS_AUTO: c_int = 0;
const PHONEMES_IPA: c_int = 0x02;

type InitializeFn = unsafe extern "C" fn(c_int, c_int, *const c_char, c_int) -> c_int;
type SetVoiceByNameFn = unsafe extern "C" fn(*const c_char) -> c_int;
type SetVoiceByPropertiesFn = unsafe extern "C" fn(*mut VoiceSpec) -> c_int;
type TextToPhonemesFn = unsafe extern "C" fn(*mut *const c_void, c_int, c_int) -> *const c_char;

/// speak_lib.h's `espeak_VOICE`, as a voice query: only `languages` is set.
#[repr(C)]
struct VoiceSpec {
    name: *const c_char,
    languages: *const c_char,
    identifier: *const c_char,
    gender: u8,
    age: u8,
    variant: u8,
    xx1: u8,
    score: c_int,
    spare: *mut c_void,
}

/// The opened library and the voice it is set to. espeak-ng keeps its whole state in
/// globals and is not thread-safe, so the one instance lives behind [`ESPEAK`]'s mutex and
/// every call into the library is made with that lock held.
struct Espeak {
    set_voice_by_name: SetVoiceByNameFn,
    set_voice_by_properties: SetVoiceByPropertiesFn,
    text_to_phonemes: TextToPhonemesFn,
    voice: Option<String>,
    /// Keeps the functions above mapped; never dropped (it lives in a static).
    _library: Library,
}

static ESPEAK: OnceLock<Result<Mutex<Espeak>, String>> = OnceLock::new();

fn espeak() -> Result<MutexGuard<'static, Espeak>, TtsError> {
    let espeak = ESPEAK
        .get_or_init(|| Espeak::open().map(Mutex::new))
        .as_ref()
        .map_err(|reason| TtsError::EspeakMissing {
            reason: reason.clone(),
        })?;
    // Every call into espeak-ng returns before anything here could panic, so a poisoned
    // lock guards a consistent library; only the remembered voice is dropped, to be safe.
    Ok(espeak.lock().unwrap_or_else(|poisoned| {
        let mut guard = poisoned.into_inner();
        guard.voice = None;
        guard
    }))
}

/// A function of `library`, copied out of its symbol.
///
/// # Safety
/// `T` must be the function's C prototype, and the pointer must not outlive `library`.
unsafe fn symbol<T: Copy>(library: &Library, name: &[u8]) -> Result<T, String> {
    // SAFETY: forwarded to the caller (see above).
    unsafe { library.get::<T>(name) }
        .map(|f| *f)
        .map_err(|e| format!("{LIBRARY}: {e}"))
}

impl Espeak {
    fn open() -> Result<Self, String> {
        // SAFETY: libespeak-ng's load-time initialisers only set up static tables; loading
        // it runs no code that could conflict with this process.
        let library = unsafe { Library::new(LIBRARY) }.map_err(|e| {
            format!("cannot open {LIBRARY} ({e}); install the Debian package espeak-ng")
        })?;
        // SAFETY: the three type aliases match the prototypes in speak_lib.h (1.51 and
        // later), and the pointers stay valid because `library` is kept in the same value.
        let (initialize, set_voice_by_name, set_voice_by_properties, text_to_phonemes) = unsafe {
            (
                symbol::<InitializeFn>(&library, b"espeak_Initialize\0")?,
                symbol::<SetVoiceByNameFn>(&library, b"espeak_SetVoiceByName\0")?,
                symbol::<SetVoiceByPropertiesFn>(&library, b"espeak_SetVoiceByProperties\0")?,
                symbol::<TextToPhonemesFn>(&library, b"espeak_TextToPhonemes\0")?,
            )
        };
        // SAFETY: called once (inside ESPEAK's OnceLock) before any other espeak-ng call; a
        // null path means espeak-ng's default data directory (or $ESPEAK_DATA_PATH).
        let rate = unsafe {
            initialize(
                AUDIO_OUTPUT_SYNCHRONOUS,
                0,
                std::ptr::null(),
                INITIALIZE_DONT_EXIT,
            )
        };
        if rate <= 0 {
            return Err(format!(
                "{LIBRARY} could not initialise (is espeak-ng-data installed?)"
            ));
        }
        Ok(Self {
            set_voice_by_name,
            set_voice_by_properties,
            text_to_phonemes,
            voice: None,
            _library: library,
        })
    }

    fn select(&mut self, voice: &str) -> Result<(), TtsError> {
        if self.voice.as_deref() == Some(voice) {
            return Ok(());
        }
        self.voice = None;
        let unknown = || TtsError::UnknownVoice {
            voice: voice.to_string(),
        };
        let name = CString::new(voice).map_err(|_| unknown())?;
        // By name first, as Piper does; then by language, as the espeak-ng command does,
        // which is what makes `fr-fr`, `zh` or `de-at` work (no voice file has those names).
        let mut spec = VoiceSpec {
            name: std::ptr::null(),
            languages: name.as_ptr(),
            identifier: std::ptr::null(),
            gender: 0,
            age: 0,
            variant: 0,
            xx1: 0,
            score: 0,
            spare: std::ptr::null_mut(),
        };
        // SAFETY: `name` is NUL-terminated and outlives both calls; `spec` is laid out as
        // `espeak_VOICE` and is ours for the call; the caller holds ESPEAK's lock, so no
        // other thread is inside espeak-ng.
        let found = unsafe {
            (self.set_voice_by_name)(name.as_ptr()) == 0
                || (self.set_voice_by_properties)(&mut spec) == 0
        };
        if !found {
            return Err(unknown());
        }
        self.voice = Some(voice.to_string());
        Ok(())
    }
}

/// What ended a clause, as Piper sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminator {
    /// End of text, a blank line, a clause cut for length, or a mark Piper does not keep.
    None,
    Period,
    Question,
    Exclamation,
    Comma,
    Colon,
    Semicolon,
}

impl Terminator {
    /// The phonemes Piper appends for it: clause marks carry the space that separates them
    /// from the next clause, sentence marks end the sentence.
    pub fn phonemes(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Period => ".",
            Self::Question => "?",
            Self::Exclamation => "!",
            Self::Comma => ", ",
            Self::Colon => ": ",
            Self::Semicolon => "; ",
        }
    }
}

/// One clause as espeak-ng cut it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// Bytes of the text it covers, its mark and the spaces after it included.
    pub range: Range<usize>,
    /// IPA exactly as espeak-ng returned it.
    pub phonemes: String,
    pub terminator: Terminator,
    pub ends_sentence: bool,
}

/// One sentence ready for a Piper voice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentence {
    /// The text it was read from, trimmed.
    pub text: String,
    /// Unicode codepoints after NFD, language-switch flags removed, marks appended.
    pub phonemes: Vec<char>,
}

/// espeak-ng's clauses of `text` for `voice` (an espeak-ng voice such as `en-us`).
pub fn clauses(voice: &str, text: &str) -> Result<Vec<Clause>, TtsError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let failed = |reason: &str| TtsError::Phonemize {
        voice: voice.to_string(),
        reason: reason.to_string(),
    };
    // NUL would end the C string early; it and its replacement are both one byte, so byte
    // offsets into `c_text` are offsets into `text`.
    let c_text = CString::new(text.replace('\0', " ")).map_err(|_| failed("text has NUL"))?;
    let (base, len) = (c_text.as_ptr() as usize, c_text.as_bytes().len());
    let mut espeak = espeak()?;
    espeak.select(voice)?;

    let mut clauses = Vec::new();
    let mut cursor: *const c_void = c_text.as_ptr().cast();
    let mut start = 0;
    // Every call consumes at least one character or ends the text; the bound only turns a
    // library that stopped advancing into an error instead of a hang.
    for _ in 0..=text.chars().count() + 1 {
        if cursor.is_null() {
            return Ok(clauses);
        }
        // SAFETY: `cursor` points into `c_text`, which is NUL-terminated and outlives the
        // loop; espeak-ng advances it within the string or sets it to null. The returned
        // string is copied before the next call overwrites it, and ESPEAK's lock is held.
        let phonemes = unsafe {
            let phonemes = (espeak.text_to_phonemes)(&mut cursor, CHARS_AUTO, PHONEMES_IPA);
            if phonemes.is_null() {
                return Err(failed("espeak_TextToPhonemes returned nothing"));
            }
            CStr::from_ptr(phonemes).to_string_lossy().into_owned()
        };
        let end = if cursor.is_null() {
            len
        } else {
            let consumed = (cursor as usize)
                .checked_sub(base)
                .filter(|&n| n <= len && text.is_char_boundary(n))
                .ok_or_else(|| failed("espeak-ng moved outside the text"))?;
            // espeak-ng reads one character past the clause and hands it to the next call
            // (its `UngetC`), so that character belongs to the next clause.
            text[..consumed]
                .char_indices()
                .next_back()
                .map_or(0, |(i, _)| i)
                .max(start)
        };
        let (terminator, ends_sentence) = classify(&text[start..end]);
        clauses.push(Clause {
            range: start..end,
            phonemes,
            terminator,
            ends_sentence,
        });
        start = end;
    }
    Err(failed("espeak-ng did not reach the end of the text"))
}

/// `text` as Piper phonemizes it for `voice`: one [`Sentence`] per sentence.
pub fn phonemize(voice: &str, text: &str) -> Result<Vec<Sentence>, TtsError> {
    let clauses = clauses(voice, text)?;
    Ok(sentence_spans(&clauses)
        .into_iter()
        .filter_map(|span| {
            let mut phonemes = Vec::new();
            for clause in &clauses[span.clone()] {
                let kept = without_language_flags(&clause.phonemes) + clause.terminator.phonemes();
                phonemes.extend(kept.nfd());
            }
            // Piper skips a sentence with nothing to say rather than feed the model `^$`.
            (!phonemes.is_empty()).then(|| Sentence {
                text: text[clauses[span.start].range.start..clauses[span.end - 1].range.end]
                    .trim()
                    .to_string(),
                phonemes,
            })
        })
        .collect())
}

/// The sentences of `text` as espeak-ng (and Piper) split them, trimmed, empty ones left out.
pub fn sentences(voice: &str, text: &str) -> Result<Vec<String>, TtsError> {
    let clauses = clauses(voice, text)?;
    Ok(sentence_spans(&clauses)
        .into_iter()
        .map(|span| text[clauses[span.start].range.start..clauses[span.end - 1].range.end].trim())
        .filter(|sentence| !sentence.is_empty())
        .map(str::to_string)
        .collect())
}

/// Indices of the clauses of each sentence: a sentence ends after every clause marked so,
/// and at the end of the text.
fn sentence_spans(clauses: &[Clause]) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut start = 0;
    for (i, clause) in clauses.iter().enumerate() {
        if clause.ends_sentence || i + 1 == clauses.len() {
            spans.push(start..i + 1);
            start = i + 1;
        }
    }
    spans
}

/// espeak-ng wraps words it reads with another language's rules in `(lang)` flags; Piper
/// drops them (and everything between the parentheses).
fn without_language_flags(phonemes: &str) -> String {
    let mut kept = String::with_capacity(phonemes.len());
    let mut in_flag = false;
    for c in phonemes.chars() {
        match (in_flag, c) {
            (false, '(') => in_flag = true,
            (true, ')') => in_flag = false,
            (false, c) => kept.push(c),
            (true, _) => {}
        }
    }
    kept
}

/// The terminator of a clause and whether it ends a sentence, from the clause's text.
///
/// espeak-ng ends a clause at a mark only when a space, bracket, quote or the end of the
/// text follows (or at marks needing no space), and swallows the spaces after it, so the
/// mark is the last non-space character. A run of `?`/`!` counts as its first mark; three
/// or more dots are an ellipsis. A blank line after the clause makes it a paragraph, which
/// ends the sentence with no mark kept.
pub fn classify(clause: &str) -> (Terminator, bool) {
    let body = clause.trim_end();
    let paragraph = clause[body.len()..].matches('\n').count() >= 2;
    let Some(last) = body.chars().next_back() else {
        return (Terminator::None, false);
    };
    let mark = if body.ends_with("...") {
        '…'
    } else if is_question_or_exclamation(last) {
        body.chars()
            .rev()
            .take_while(|&c| is_question_or_exclamation(c))
            .last()
            .unwrap_or(last)
    } else {
        last
    };
    match punctuation(mark) {
        _ if paragraph => (Terminator::None, true),
        Some(kind) => kind,
        None => (Terminator::None, false),
    }
}

fn is_question_or_exclamation(c: char) -> bool {
    matches!(
        punctuation(c),
        Some((Terminator::Question | Terminator::Exclamation, _))
    ) || matches!(c, '\u{FF1F}' | '\u{FF01}')
}

/// espeak-ng's clause type for a character (its `clause_type_from_codepoint` over the
/// ESPEAKNG_PROPERTY_* flags of its Unicode tables), as Piper reads it: marks flagged
/// "optional space after" fail Piper's comparison and keep no phoneme.
fn punctuation(c: char) -> Option<(Terminator, bool)> {
    use Terminator as T;
    Some(match c {
        '.' | '\u{06D4}' | '\u{0701}' | '\u{0704}' | '\u{1362}' | '\u{166E}' | '\u{1803}'
        | '\u{1809}' | '\u{2CF9}' | '\u{2CFE}' | '\u{2E33}' | '\u{2E3C}' | '\u{A4FF}'
        | '\u{A60E}' | '\u{A6F3}' | '\u{FE12}' | '\u{FE52}' | '\u{FF61}' => (T::Period, true),
        '?' | '\u{037E}' | '\u{061F}' | '\u{0709}' | '\u{1367}' | '\u{1945}' | '\u{2047}'
        | '\u{2CFA}' | '\u{2CFB}' | '\u{A60F}' | '\u{A6F7}' | '\u{FE16}' | '\u{FE56}' => {
            (T::Question, true)
        }
        '!' | '\u{0703}' | '\u{07F9}' | '\u{1944}' | '\u{203C}' | '\u{FE15}' | '\u{FE57}' => {
            (T::Exclamation, true)
        }
        ',' | '\u{055D}' | '\u{060C}' | '\u{0702}' | '\u{07F8}' | '\u{0F14}' | '\u{1363}'
        | '\u{1802}' | '\u{1808}' | '\u{2E32}' | '\u{2E34}' | '\u{2E41}' | '\u{A4FE}'
        | '\u{A60D}' | '\u{A6F5}' | '\u{FE10}' | '\u{FE11}' | '\u{FE50}' | '\u{FE51}'
        | '\u{FF64}' => (T::Comma, false),
        ':' | '\u{0706}' | '\u{0707}' | '\u{1365}' | '\u{1366}' | '\u{1804}' | '\u{A6F4}'
        | '\u{FE13}' | '\u{FE55}' => (T::Colon, false),
        // Semicolons, and the en/em dashes espeak-ng treats as one.
        ';' | '\u{0387}' | '\u{061B}' | '\u{0708}' | '\u{1364}' | '\u{204F}' | '\u{2E35}'
        | '\u{A6F6}' | '\u{FE14}' | '\u{FE54}' | '\u{2013}' | '\u{2014}' | '\u{2E3A}'
        | '\u{2E3B}' | '\u{FE31}' | '\u{FE32}' => (T::Semicolon, false),
        // Sentence marks that need no space after them (danda, CJK, full-width).
        '\u{0589}' | '\u{0964}' | '\u{0DF4}' | '\u{0F0D}' | '\u{3002}' | '\u{FF0E}'
        | '\u{FF1F}' | '\u{FF01}' => (T::None, true),
        // Paragraph separators.
        '\u{0700}' | '\u{0965}' | '\u{0F0E}' | '\u{10FB}' | '\u{1368}' => (T::None, true),
        // Clause marks that need no space after them, inverted marks and ellipses.
        '\u{3001}' | '\u{FF0C}' | '\u{FF1A}' | '\u{FF1B}' | '¿' | '¡' | '…' | '\u{1801}'
        | '\u{FE19}' => (T::None, false),
        _ => return None,
    })
}

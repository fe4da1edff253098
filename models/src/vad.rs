//! Voice activity detection: the engine-neutral [`VoiceDetector`] trait, the per-stream
//! [`VadState`], and Silero VAD run by ONNX Runtime ([`SileroVad`]).
//!
//! ONNX Runtime is a shared library installed by `models/fetch` and opened at run time;
//! call [`init_onnxruntime`] once before loading any ONNX model.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use ort::environment::Environment;
use ort::ep::ExecutionProvider as _;
use ort::session::builder::SessionBuilder;
use ort::session::Session;
use ort::value::TensorRef;

use crate::asr::SAMPLE_RATE;
use crate::device::{choose, Device, DeviceError, DeviceRequest, Offer};

/// Samples per VAD decision at 16 kHz: the only window Silero v5 accepts at that rate.
pub const VAD_WINDOW: usize = 512;
/// [`VAD_WINDOW`] in milliseconds.
pub const VAD_WINDOW_MS: u32 = 32;

/// Samples of the previous window that Silero's reference wrapper (`OnnxWrapper`) prepends
/// at 16 kHz. Scores depend on them: leaving them out moves some of jfk.wav's windows by up
/// to 0.33, across the 0.5 threshold.
const CONTEXT: usize = 64;
/// Silero v5's recurrent state: [2, batch = 1, 128].
const STATE_SHAPE: [usize; 3] = [2, 1, 128];
const STATE_LEN: usize = STATE_SHAPE[0] * STATE_SHAPE[1] * STATE_SHAPE[2];
/// The `sr` input, a scalar; kept as a static so every run borrows it instead of allocating.
static SAMPLE_RATE_INPUT: [i64; 1] = [SAMPLE_RATE as i64];

/// The Silero v5 signature, checked when a model is loaded so that a different export
/// (v3/v4 take `h` and `c`) fails with a message instead of at the first window.
const INPUTS: [&str; 3] = ["input", "state", "sr"];
const OUTPUTS: [&str; 2] = ["output", "stateN"];

#[derive(Debug, thiserror::Error)]
pub enum VadError {
    #[error(
        "ONNX Runtime is not installed: no libonnxruntime.so.* in {dir} (run models/fetch, or set TOLK_MODELS_DIR)"
    )]
    RuntimeMissing { dir: String },
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    RuntimeLoad { path: String, reason: String },
    #[error("cannot load VAD model {path}: ONNX Runtime is not initialised (call init_onnxruntime first)")]
    NotInitialised { path: String },
    #[error("cannot load VAD model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("voice activity detection failed at {step}: {reason}")]
    Inference { step: &'static str, reason: String },
}

/// One voice detector instance. Implementations hold per-worker resources (an ONNX
/// session, buffers); everything that belongs to an audio stream lives in [`VadState`], so
/// any worker can serve any stream.
///
/// CPU-bound and blocking: call it from a worker thread, never from an async executor.
pub trait VoiceDetector: Send {
    /// Speech probability for each complete [`VAD_WINDOW`] of `audio` (mono, 16 kHz, in
    /// [-1, 1]), in order. A trailing partial window is kept in `state` and completed by
    /// the next call, so callers may pass any length and the result does not depend on how
    /// the stream was cut. After an error, reset `state` to its default.
    fn speech_probabilities(
        &mut self,
        state: &mut VadState,
        audio: &[f32],
    ) -> Result<Vec<f32>, VadError>;
}

/// Everything a detector remembers about one audio stream. Owned by the caller, one per
/// stream; `VadState::default()` starts a new stream.
#[derive(Debug, Clone)]
pub struct VadState {
    /// The model's recurrent state after the last window.
    rnn: [f32; STATE_LEN],
    /// The last [`CONTEXT`] samples of the last window, prepended to the next.
    context: [f32; CONTEXT],
    /// Samples received after the last complete window (fewer than [`VAD_WINDOW`]).
    pending: Vec<f32>,
}

impl Default for VadState {
    fn default() -> Self {
        Self {
            rnn: [0.0; STATE_LEN],
            context: [0.0; CONTEXT],
            pending: Vec::with_capacity(VAD_WINDOW),
        }
    }
}

/// The process-wide ONNX Runtime environment; sessions are created in it.
static ORT_ENV: OnceLock<Environment> = OnceLock::new();
/// Serialises initialisation: ort allows one environment per process, so two threads
/// racing to build one would make the loser fail.
static ORT_INIT: Mutex<()> = Mutex::new(());

/// Load ONNX Runtime from `<models_dir>/onnxruntime/libonnxruntime.so.<version>` (the
/// highest version there). Idempotent: later calls return `Ok` without looking at
/// `models_dir`, since a process can load the library only once.
pub fn init_onnxruntime(models_dir: &Path) -> Result<(), VadError> {
    if ORT_ENV.get().is_some() {
        return Ok(());
    }
    // A panic elsewhere while holding this lock leaves nothing half-done: the environment
    // is either in ORT_ENV or not.
    let _guard = ORT_INIT.lock().unwrap_or_else(PoisonError::into_inner);
    if ORT_ENV.get().is_some() {
        return Ok(());
    }
    let library = onnxruntime_library(models_dir)?;
    let load_error = |reason: String| VadError::RuntimeLoad {
        path: library.display().to_string(),
        reason,
    };
    let environment = ort::init_from(&library)
        .map_err(|e| load_error(e.to_string()))?
        .with_name("tolk")
        .with_telemetry(false)
        .build()
        .map_err(|e| load_error(e.to_string()))?;
    // Cannot fail: the lock is held and ORT_ENV was checked empty under it.
    let _ = ORT_ENV.set(environment);
    Ok(())
}

/// The device ONNX Runtime sessions (VAD, Piper voices) run on: set once, by
/// [`use_onnx_device`]; the CPU when it never was.
static ORT_DEVICE: OnceLock<Device> = OnceLock::new();

/// Choose where this process's ONNX models run ([`init_onnxruntime`] first). `cuda:N`
/// needs a library with the CUDA provider (PyPI `onnxruntime-gpu`) and the GPU; `auto`
/// takes it when both are there. The first call decides.
pub fn use_onnx_device(request: DeviceRequest) -> Result<Device, DeviceError> {
    let cuda = match ort::ep::CUDA::is_available() {
        Ok(true) => Ok(()),
        Ok(false) => Err(
            "the ONNX Runtime library in the models directory has no CUDA provider \
             (the GPU build is PyPI's onnxruntime-gpu)"
                .to_string(),
        ),
        Err(e) => Err(format!("ONNX Runtime cannot list its providers: {e}")),
    };
    let offer = Offer {
        cuda,
        gpus: crate::device::nvidia_gpus(),
    };
    let device = choose("onnxruntime", request, &offer)?;
    Ok(*ORT_DEVICE.get_or_init(|| device))
}

/// The device [`use_onnx_device`] chose.
pub fn onnx_device() -> Device {
    ORT_DEVICE.get().copied().unwrap_or(Device::Cpu)
}

/// A session builder for this process's device: on a GPU, the CUDA provider, refusing to
/// fall back to the CPU unnoticed.
pub(crate) fn session_builder(environment: &Environment) -> ort::Result<SessionBuilder> {
    let builder = Session::builder(environment)?;
    match onnx_device() {
        Device::Cpu => Ok(builder),
        Device::Cuda(n) => Ok(builder.with_execution_providers([ort::ep::CUDA::default()
            .with_device_id(n as i32)
            .build()
            .error_on_failure()])?),
    }
}

/// The environment [`init_onnxruntime`] built, for this crate's other ONNX models (Piper
/// voices): ort allows one environment per process, so they cannot build their own.
pub(crate) fn onnxruntime_environment() -> Option<&'static Environment> {
    ORT_ENV.get()
}

/// `<models_dir>/onnxruntime/libonnxruntime.so.<version>` with the highest version,
/// compared numerically so that 1.31.1 beats 1.9.0.
fn onnxruntime_library(models_dir: &Path) -> Result<PathBuf, VadError> {
    let dir = models_dir.join("onnxruntime");
    let missing = || VadError::RuntimeMissing {
        dir: dir.display().to_string(),
    };
    fs::read_dir(&dir)
        .map_err(|_| missing())?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let version: Vec<u32> = name
                .strip_prefix("libonnxruntime.so.")?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<_>>()?;
            Some((version, path))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, path)| path)
        .ok_or_else(missing)
}

/// Silero VAD v5 (16 kHz) on ONNX Runtime. One instance per worker thread.
pub struct SileroVad {
    session: Session,
    /// The 576-sample model input (context + window), reused across windows.
    input: Vec<f32>,
}

impl SileroVad {
    /// Load `silero_vad.onnx`. [`init_onnxruntime`] must have succeeded first.
    pub fn load(path: &Path) -> Result<Self, VadError> {
        let load_error = |reason: String| VadError::Load {
            path: path.display().to_string(),
            reason,
        };
        let environment = ORT_ENV.get().ok_or_else(|| VadError::NotInitialised {
            path: path.display().to_string(),
        })?;
        // A window takes ~0.15 ms on one core: thread hand-offs would cost about what they
        // save, and a pool already runs one detector per worker thread.
        let session = session_builder(environment)
            .and_then(|b| b.with_intra_threads(1).map_err(Into::into))
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            .and_then(|mut b| b.commit_from_file(path))
            .map_err(|e| load_error(e.to_string()))?;
        check_signature(&session).map_err(load_error)?;
        Ok(Self {
            session,
            input: Vec::with_capacity(CONTEXT + VAD_WINDOW),
        })
    }

    /// Run one window, advancing `state`'s recurrent state and context.
    fn run_window(&mut self, state: &mut VadState, window: &[f32]) -> Result<f32, VadError> {
        let failed = |step: &'static str| {
            move |e: ort::Error| VadError::Inference {
                step,
                reason: e.to_string(),
            }
        };
        self.input.clear();
        self.input.extend_from_slice(&state.context);
        self.input.extend_from_slice(window);
        let input = TensorRef::from_array_view(([1, self.input.len()], self.input.as_slice()))
            .map_err(failed("input tensor"))?;
        let rnn = TensorRef::from_array_view((STATE_SHAPE, state.rnn.as_slice()))
            .map_err(failed("state tensor"))?;
        let sr = TensorRef::from_array_view(((), SAMPLE_RATE_INPUT.as_slice()))
            .map_err(failed("sr tensor"))?;
        let outputs = self
            .session
            .run(ort::inputs!["input" => input, "state" => rnn, "sr" => sr])
            .map_err(failed("run"))?;

        let output = |name: &'static str| {
            let value = outputs.get(name).ok_or(VadError::Inference {
                step: name,
                reason: "missing from the model's outputs".into(),
            })?;
            value.try_extract_tensor::<f32>().map_err(failed(name))
        };
        let (_, probability) = output("output")?;
        let (_, next_state) = output("stateN")?;
        if probability.len() != 1 || next_state.len() != STATE_LEN {
            return Err(VadError::Inference {
                step: "outputs",
                reason: format!(
                    "expected 1 probability and {STATE_LEN} state values, got {} and {}",
                    probability.len(),
                    next_state.len()
                ),
            });
        }
        let probability = probability[0];
        state.rnn.copy_from_slice(next_state);
        state
            .context
            .copy_from_slice(&window[VAD_WINDOW - CONTEXT..]);
        Ok(probability)
    }
}

impl<V: VoiceDetector + ?Sized> VoiceDetector for Box<V> {
    fn speech_probabilities(
        &mut self,
        state: &mut VadState,
        audio: &[f32],
    ) -> Result<Vec<f32>, VadError> {
        (**self).speech_probabilities(state, audio)
    }
}

impl VoiceDetector for SileroVad {
    fn speech_probabilities(
        &mut self,
        state: &mut VadState,
        audio: &[f32],
    ) -> Result<Vec<f32>, VadError> {
        let mut probabilities =
            Vec::with_capacity((state.pending.len() + audio.len()) / VAD_WINDOW);
        let mut rest = audio;
        if !state.pending.is_empty() {
            let missing = VAD_WINDOW - state.pending.len();
            if rest.len() < missing {
                state.pending.extend_from_slice(rest);
                return Ok(probabilities);
            }
            let (head, tail) = rest.split_at(missing);
            let mut window = std::mem::take(&mut state.pending);
            window.extend_from_slice(head);
            probabilities.push(self.run_window(state, &window)?);
            // Hand the allocation back so a stream fed in small pieces never reallocates.
            window.clear();
            state.pending = window;
            rest = tail;
        }
        let mut windows = rest.chunks_exact(VAD_WINDOW);
        for window in &mut windows {
            probabilities.push(self.run_window(state, window)?);
        }
        state.pending.extend_from_slice(windows.remainder());
        Ok(probabilities)
    }
}

/// Check that the model declares Silero v5's inputs and outputs, listing what it has if not.
fn check_signature(session: &Session) -> Result<(), String> {
    let names = |outlets: &[ort::value::Outlet]| -> Vec<String> {
        outlets.iter().map(|o| o.name().to_string()).collect()
    };
    let (inputs, outputs) = (names(session.inputs()), names(session.outputs()));
    let has_all = |have: &[String], want: &[&str]| want.iter().all(|w| have.iter().any(|h| h == w));
    if has_all(&inputs, &INPUTS) && has_all(&outputs, &OUTPUTS) {
        return Ok(());
    }
    Err(format!(
        "not a Silero VAD v5 model: expected inputs {INPUTS:?} and outputs {OUTPUTS:?}, found inputs {inputs:?} and outputs {outputs:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_highest_runtime_version() {
        let dir = std::env::temp_dir().join(format!("tolk-vad-ort-{}", std::process::id()));
        let runtime = dir.join("onnxruntime");
        fs::create_dir_all(&runtime).unwrap();
        for name in [
            "libonnxruntime.so",
            "libonnxruntime.so.1.9.0",
            "libonnxruntime.so.1.31.1",
            "libonnxruntime.so.1.31.1.debug",
        ] {
            fs::write(runtime.join(name), b"").unwrap();
        }
        assert_eq!(
            onnxruntime_library(&dir).unwrap(),
            runtime.join("libonnxruntime.so.1.31.1")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_runtime_names_the_directory() {
        let err = onnxruntime_library(Path::new("/nonexistent/models"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/models/onnxruntime") && err.contains("models/fetch"),
            "{err}"
        );
    }
}

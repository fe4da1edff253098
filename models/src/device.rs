//! Where inference runs: the CPU, or an NVIDIA GPU through CUDA.
//!
//! Each engine family is asked for a [`DeviceRequest`] (`auto`, `cpu`, `cuda:N`) and
//! answers with the [`Device`] it will use, or an error that says what is missing. `auto`
//! takes the GPU only when both the build (whisper.cpp compiled with CUDA; an ONNX Runtime
//! library with its CUDA provider) and the machine (a GPU the driver reports) have one. An
//! explicit `cuda:N` that cannot be had is an error at start-up, never a quiet fall-back.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    /// The GPU when one can be used, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// CUDA device N (`cuda` alone is `cuda:0`).
    Cuda(u32),
}

impl FromStr for DeviceRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device '{s}': use auto, cpu, cuda or cuda:N")),
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(u32),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A device was asked for that this build or machine does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{engine} on {device}: {reason}")]
pub struct DeviceError {
    pub engine: &'static str,
    pub device: String,
    pub reason: String,
}

/// What an engine family can use here.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The engine was built with (or its library has) CUDA support; if not, why not.
    pub cuda: Result<(), String>,
    /// NVIDIA GPUs on this machine.
    pub gpus: usize,
}

/// The device `engine` runs on for `request`, given what it is offered.
pub fn choose(
    engine: &'static str,
    request: DeviceRequest,
    offer: &Offer,
) -> Result<Device, DeviceError> {
    match request {
        DeviceRequest::Cpu => Ok(Device::Cpu),
        DeviceRequest::Auto if offer.cuda.is_ok() && offer.gpus > 0 => Ok(Device::Cuda(0)),
        DeviceRequest::Auto => Ok(Device::Cpu),
        DeviceRequest::Cuda(n) => {
            let refuse = |reason: String| DeviceError {
                engine,
                device: request.to_string(),
                reason,
            };
            if let Err(why) = &offer.cuda {
                return Err(refuse(why.clone()));
            }
            if n as usize >= offer.gpus {
                return Err(refuse(format!(
                    "this machine has {} NVIDIA GPU{} (the driver lists them in /proc/driver/nvidia/gpus)",
                    offer.gpus,
                    if offer.gpus == 1 { "" } else { "s" }
                )));
            }
            Ok(Device::Cuda(n))
        }
    }
}

/// NVIDIA GPUs on this machine: in a CUDA build, those the CUDA runtime can use; else
/// those the driver lists (a directory per GPU in /proc/driver/nvidia/gpus, which some
/// sandboxes do not show).
pub fn nvidia_gpus() -> usize {
    #[cfg(feature = "cuda")]
    if let Some(n) = cuda_runtime_gpus() {
        return n;
    }
    std::fs::read_dir("/proc/driver/nvidia/gpus").map_or(0, |d| d.count())
}

/// The CUDA runtime's device count; `None` when it cannot tell (no driver, say).
#[cfg(feature = "cuda")]
fn cuda_runtime_gpus() -> Option<usize> {
    // libcudart, which the `cuda` build links for whisper.cpp.
    unsafe extern "C" {
        fn cudaGetDeviceCount(count: *mut std::ffi::c_int) -> std::ffi::c_int;
    }
    let mut count: std::ffi::c_int = 0;
    // SAFETY: the call writes one int through a valid pointer and returns a cudaError_t,
    // 0 being cudaSuccess.
    let status = unsafe { cudaGetDeviceCount(&mut count) };
    (status == 0).then(|| count.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_print_back() {
        for (text, request) in [
            ("auto", DeviceRequest::Auto),
            ("cpu", DeviceRequest::Cpu),
            ("cuda:0", DeviceRequest::Cuda(0)),
            ("cuda:3", DeviceRequest::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceRequest>(), Ok(request));
            assert_eq!(request.to_string(), text);
        }
        assert_eq!("cuda".parse::<DeviceRequest>(), Ok(DeviceRequest::Cuda(0)));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", ""] {
            assert!(bad.parse::<DeviceRequest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn auto_takes_the_gpu_only_when_build_and_machine_have_one() {
        let built = |gpus| Offer { cuda: Ok(()), gpus };
        let cpu_build = |gpus| Offer {
            cuda: Err("built without CUDA".into()),
            gpus,
        };
        assert_eq!(
            choose("x", DeviceRequest::Auto, &built(2)),
            Ok(Device::Cuda(0))
        );
        assert_eq!(choose("x", DeviceRequest::Auto, &built(0)), Ok(Device::Cpu));
        assert_eq!(
            choose("x", DeviceRequest::Auto, &cpu_build(2)),
            Ok(Device::Cpu)
        );
        assert_eq!(choose("x", DeviceRequest::Cpu, &built(2)), Ok(Device::Cpu));
        assert_eq!(
            choose("x", DeviceRequest::Cuda(1), &built(2)),
            Ok(Device::Cuda(1))
        );
    }

    #[test]
    fn an_explicit_gpu_that_cannot_be_had_is_an_error_saying_why() {
        let e = choose(
            "whisper",
            DeviceRequest::Cuda(0),
            &Offer {
                cuda: Err("built without CUDA".into()),
                gpus: 1,
            },
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "whisper on cuda:0: built without CUDA");
        let e = choose(
            "vad",
            DeviceRequest::Cuda(2),
            &Offer {
                cuda: Ok(()),
                gpus: 2,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("has 2 NVIDIA GPUs"), "{e}");
    }
}

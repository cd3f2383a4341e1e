//! tract-cuda's kernel cache, built without a GPU.
//!
//! tract-cuda compiles its CUDA kernel libraries with NVRTC when it first
//! creates a context (77 s cold on the H200) and keeps the cubins in
//! `<cache>/tract/<version>/cuda/<api>/cubins/sm_<arch>/nvrtc-<M.m>/`, one
//! file per library named by a hash of the compile target and the sources;
//! it compiles nothing when the files are there. [`precompile`] writes those
//! same files here, for a given GPU architecture, with NVRTC from the PyPI
//! wheels (`nvidia-cuda-nvrtc`, `nvidia-cuda-runtime` and `nvidia-cuda-cccl`
//! 13.0: the library, `cuda_fp16.h` and the CCCL headers) and no GPU.

// NVRTC is a C API: this module is the sidecar's one place that calls it.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};
use thiserror::Error;
use tract_cuda::kernels::{LibraryName, COMMON_H};

/// What to compile, and where.
#[derive(Debug, Clone)]
pub struct PrecompileOptions {
    /// GPU architectures as compute capability without the dot (90: H100/H200).
    pub archs: Vec<u32>,
    /// The cache root tract-cuda will read: what `XDG_CACHE_HOME` will be
    /// when the sidecar runs. `None`: this process's own cache folder.
    pub cache_home: Option<PathBuf>,
    /// A CUDA toolkit root, or the PyPI wheels' `nvidia/cu13` folder: its
    /// `include/` must hold `cuda_fp16.h` and the CCCL headers.
    pub cuda_home: PathBuf,
}

/// One kernel library in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cubin {
    /// The library (tract-cuda's name for it).
    pub library: String,
    /// `sm_90` and so on.
    pub arch: String,
    /// The file tract-cuda will load.
    pub path: PathBuf,
    /// Whether this run compiled it (false: it was there already).
    pub compiled: bool,
}

/// Why the cache could not be built.
#[derive(Debug, Error)]
pub enum PrecompileError {
    /// NVRTC's library cannot be loaded.
    #[error(
        "NVRTC is not loadable (libnvrtc.so.13): install the PyPI wheel nvidia-cuda-nvrtc==13.0.* and put its \
         nvidia/cu13/lib folder on LD_LIBRARY_PATH"
    )]
    NvrtcMissing,
    /// A header folder is missing.
    #[error("{0}")]
    Headers(String),
    /// NVRTC rejected a library.
    #[error("NVRTC could not compile {library} for {arch}: {log}")]
    Compile {
        /// The library.
        library: String,
        /// The architecture.
        arch: String,
        /// NVRTC's log.
        log: String,
    },
    /// NVRTC failed outside compilation.
    #[error("NVRTC: {0}")]
    Nvrtc(String),
    /// The cache could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The NVRTC target tract-cuda keys its cache on, for `arch` and NVRTC
/// `major.minor`: the same string tract-cuda builds from the device.
pub fn compile_target(arch: u32, nvrtc: (i32, i32)) -> String {
    format!("--std=c++17 --gpu-architecture=sm_{arch} nvrtc-{}.{}", nvrtc.0, nvrtc.1)
}

/// The folder tract-cuda reads cubins for `arch` from, under `cache_home`
/// (`None`: this process's cache folder, as tract-cuda computes it).
pub fn cubin_folder(cache_home: Option<&Path>, arch: u32, nvrtc: (i32, i32)) -> PathBuf {
    let own = tract_cuda::kernels::cubin_dir();
    let root = match cache_home {
        // tract-cuda's folder is `<user cache>/tract/<version>/cuda/<api>/cubins`:
        // keep everything from `tract` on.
        Some(home) => {
            let tail: PathBuf = own.components().skip_while(|c| c.as_os_str() != "tract").collect();
            home.join(tail)
        }
        None => own.to_path_buf(),
    };
    root.join(format!("sm_{arch}")).join(format!("nvrtc-{}.{}", nvrtc.0, nvrtc.1))
}

/// The version of the NVRTC library this process loads.
pub fn nvrtc_version() -> Result<(i32, i32), PrecompileError> {
    // SAFETY: a dlopen probe with no other effect.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(PrecompileError::NvrtcMissing);
    }
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: two out-pointers to live integers.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| PrecompileError::Nvrtc(format!("nvrtcVersion: {e:?}")))?;
    Ok((major, minor))
}

/// Compiles every kernel library tract-cuda loads at context creation for
/// each architecture, skipping files already in the cache, on as many
/// threads as there are cores.
pub fn precompile(options: &PrecompileOptions) -> Result<Vec<Cubin>, PrecompileError> {
    let nvrtc = nvrtc_version()?;
    let includes = include_flags(&options.cuda_home)?;
    let mut jobs = Vec::new();
    for &arch in &options.archs {
        let dir = cubin_folder(options.cache_home.as_deref(), arch, nvrtc);
        std::fs::create_dir_all(&dir)
            .map_err(|source| PrecompileError::Io { path: dir.display().to_string(), source })?;
        for library in LibraryName::EAGER {
            let path = library.cubin_path(&dir, &compile_target(arch, nvrtc));
            jobs.push((library, arch, path));
        }
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(jobs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let ix = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((library, arch, path)) = jobs.get(ix) else { break };
                let result = if path.exists() {
                    Ok(false)
                } else {
                    compile(*library, *arch, &includes).and_then(|cubin| write_atomically(path, &cubin).map(|()| true))
                };
                let cubin = result.map(|compiled| Cubin {
                    library: format!("{library:?}"),
                    arch: format!("sm_{arch}"),
                    path: path.clone(),
                    compiled,
                });
                if let Ok(mut r) = results.lock() {
                    r.push((ix, cubin));
                }
            });
        }
    });
    let mut results = results.into_inner().map_err(|_| PrecompileError::Nvrtc("a compile thread panicked".into()))?;
    if results.len() != jobs.len() {
        return Err(PrecompileError::Nvrtc("a compile thread panicked".into()));
    }
    results.sort_by_key(|(ix, _)| *ix);
    results.into_iter().map(|(_, r)| r).collect()
}

/// `-I` flags for the toolkit headers and CCCL, checked the way tract-cuda
/// checks them, so a missing folder is named here rather than on the GPU.
fn include_flags(cuda_home: &Path) -> Result<Vec<String>, PrecompileError> {
    let mut candidates = vec![cuda_home.join("include")];
    if let Ok(targets) = std::fs::read_dir(cuda_home.join("targets")) {
        candidates.extend(targets.flatten().map(|e| e.path().join("include")));
    }
    let include = candidates.iter().find(|c| c.join("cuda_fp16.h").is_file()).ok_or_else(|| {
        PrecompileError::Headers(format!(
            "no cuda_fp16.h under {}/include: point --cuda-home at a CUDA toolkit or at the PyPI wheels' nvidia/cu13 \
             folder (nvidia-cuda-runtime==13.0.*)",
            cuda_home.display()
        ))
    })?;
    if !include.join("math_constants.h").is_file() {
        return Err(PrecompileError::Headers(format!("no math_constants.h in {}", include.display())));
    }
    let cstdint = Path::new("cuda").join("std").join("cstdint");
    let cccl = [include.join("cccl"), include.join("libcudacxx").join("include"), include.clone()]
        .into_iter()
        .find(|c| c.join(&cstdint).is_file())
        .ok_or_else(|| {
            PrecompileError::Headers(format!(
                "no CCCL headers (cuda/std/cstdint) under {}: install the PyPI wheel nvidia-cuda-cccl==13.0.*",
                include.display()
            ))
        })?;
    Ok(vec![format!("-I{}", include.display()), format!("-I{}", cccl.display())])
}

/// One library through NVRTC, as tract-cuda compiles it: its source, the
/// shared `common.cuh` header, C++17, the architecture and the includes.
fn compile(library: LibraryName, arch: u32, includes: &[String]) -> Result<Vec<u8>, PrecompileError> {
    use cudarc::nvrtc::sys;
    let nvrtc = |what: &str, e: sys::nvrtcResult| PrecompileError::Nvrtc(format!("{what}: {e:?}"));
    let cstring = |s: &str| CString::new(s).map_err(|_| PrecompileError::Nvrtc("a source holds a NUL byte".into()));
    let source = cstring(library.content())?;
    let header = cstring(COMMON_H)?;
    let header_name = cstring("common.cuh")?;
    let mut program: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer is a live NUL-terminated string or a one-element
    // array of them; `program` receives the handle.
    unsafe {
        sys::nvrtcCreateProgram(
            &mut program,
            source.as_ptr(),
            std::ptr::null(),
            1,
            &header.as_ptr(),
            &header_name.as_ptr(),
        )
    }
    .result()
    .map_err(|e| nvrtc("nvrtcCreateProgram", e.0))?;
    let result = compile_program(program, library, arch, includes);
    // SAFETY: the handle came from nvrtcCreateProgram and is not used again.
    let _ = unsafe { sys::nvrtcDestroyProgram(&mut program) };
    result
}

fn compile_program(
    program: cudarc::nvrtc::sys::nvrtcProgram,
    library: LibraryName,
    arch: u32,
    includes: &[String],
) -> Result<Vec<u8>, PrecompileError> {
    use cudarc::nvrtc::sys;
    let options: Vec<CString> = ["--std=c++17".to_string(), format!("--gpu-architecture=sm_{arch}")]
        .into_iter()
        .chain(includes.iter().cloned())
        .filter_map(|o| CString::new(o).ok())
        .collect();
    let pointers: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
    // SAFETY: `pointers` holds live NUL-terminated strings for the call.
    let compiled = unsafe { sys::nvrtcCompileProgram(program, pointers.len() as c_int, pointers.as_ptr()) };
    if compiled != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(PrecompileError::Compile {
            library: format!("{library:?}"),
            arch: format!("sm_{arch}"),
            log: program_log(program),
        });
    }
    let mut len = 0usize;
    // SAFETY: a live program handle and an out-pointer.
    unsafe { sys::nvrtcGetCUBINSize(program, &mut len) }
        .result()
        .map_err(|e| PrecompileError::Nvrtc(format!("nvrtcGetCUBINSize: {e:?}")))?;
    let mut cubin = vec![0u8; len];
    // SAFETY: `cubin` has the size NVRTC reported.
    unsafe { sys::nvrtcGetCUBIN(program, cubin.as_mut_ptr().cast()) }
        .result()
        .map_err(|e| PrecompileError::Nvrtc(format!("nvrtcGetCUBIN: {e:?}")))?;
    Ok(cubin)
}

fn program_log(program: cudarc::nvrtc::sys::nvrtcProgram) -> String {
    use cudarc::nvrtc::sys;
    let mut len = 0usize;
    // SAFETY: a live program handle and an out-pointer.
    if unsafe { sys::nvrtcGetProgramLogSize(program, &mut len) } != sys::nvrtcResult::NVRTC_SUCCESS || len == 0 {
        return "(no log)".into();
    }
    let mut buf = vec![0u8; len];
    // SAFETY: `buf` has the size NVRTC reported.
    if unsafe { sys::nvrtcGetProgramLog(program, buf.as_mut_ptr().cast()) } != sys::nvrtcResult::NVRTC_SUCCESS {
        return "(no log)".into();
    }
    CStr::from_bytes_until_nul(&buf)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|_| String::from_utf8_lossy(&buf).into_owned())
}

/// Readers see no file or the whole file, as tract-cuda trusts any cubin
/// it finds.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PrecompileError> {
    let io = |source| PrecompileError::Io { path: path.display().to_string(), source };
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_layout_is_tract_cudas() {
        assert_eq!(compile_target(90, (13, 0)), "--std=c++17 --gpu-architecture=sm_90 nvrtc-13.0");
        let dir = cubin_folder(Some(Path::new("/cache")), 90, (13, 0));
        assert_eq!(dir, Path::new("/cache/tract/0.23.9/cuda/13000/cubins/sm_90/nvrtc-13.0"));
        // The file name tract-cuda looks for: basename + hash of target, header and source.
        let file = LibraryName::NN.cubin_path(&dir, &compile_target(90, (13, 0)));
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(name.starts_with("nn_") && name.ends_with(".cubin"), "{name}");
        assert_ne!(file, LibraryName::NN.cubin_path(&dir, &compile_target(89, (13, 0))));
    }

    #[test]
    fn missing_headers_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = include_flags(dir.path()).expect_err("no headers");
        assert!(err.to_string().contains("cuda_fp16.h") && err.to_string().contains("--cuda-home"), "{err}");
        std::fs::create_dir_all(dir.path().join("include")).expect("mkdir");
        std::fs::write(dir.path().join("include/cuda_fp16.h"), "").expect("write");
        std::fs::write(dir.path().join("include/math_constants.h"), "").expect("write");
        let err = include_flags(dir.path()).expect_err("no cccl");
        assert!(err.to_string().contains("nvidia-cuda-cccl"), "{err}");
        std::fs::create_dir_all(dir.path().join("include/cccl/cuda/std")).expect("mkdir");
        std::fs::write(dir.path().join("include/cccl/cuda/std/cstdint"), "").expect("write");
        let flags = include_flags(dir.path()).expect("found");
        assert!(flags[1].ends_with("include/cccl"), "{flags:?}");
    }
}

//! `meridian-sidecar cuda-precompile` builds tract-cuda's cubin cache here,
//! without a GPU, with the NVRTC wheels the bootstrap installs in
//! `.tools/cuda`: every library tract-cuda compiles at context creation, as
//! CUDA ELF for the asked architecture, at the path tract-cuda reads.

use meridian_sidecar::executor::cuda::kernels::{compile_target, cubin_folder};
use std::path::{Path, PathBuf};
use std::process::Command;
use tract_cuda::kernels::LibraryName;

fn wheels() -> PathBuf {
    let cu13 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/cuda/nvidia/cu13");
    assert!(cu13.join("lib/libnvrtc.so.13").is_file(), "{} has no NVRTC (run `make bootstrap`)", cu13.display());
    cu13
}

fn precompile(cache: &Path, cuda_home: &Path, ld_library_path: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian-sidecar"));
    cmd.args(["cuda-precompile", "--arch", "90", "--cache-home"]).arg(cache).arg("--cuda-home").arg(cuda_home);
    cmd.env_remove("LD_LIBRARY_PATH").env_remove("CUDA_HOME");
    if let Some(lib) = ld_library_path {
        cmd.env("LD_LIBRARY_PATH", lib);
    }
    cmd.output().expect("run cuda-precompile")
}

#[test]
fn the_kernel_cache_is_built_without_a_gpu_where_tract_cuda_reads_it() {
    let cu13 = wheels();
    let cache = tempfile::tempdir().expect("tempdir");
    let out = precompile(cache.path(), &cu13, Some(&cu13.join("lib")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("cuda-precompile: 10 libraries (10 compiled)"), "{stdout}");

    // The folder and names tract-cuda computes from an sm_90 device and NVRTC 13.0.
    let dir = cubin_folder(Some(cache.path()), 90, (13, 0));
    assert!(dir.ends_with("tract/0.23.9/cuda/13000/cubins/sm_90/nvrtc-13.0"), "{}", dir.display());
    for library in LibraryName::EAGER {
        let path = library.cubin_path(&dir, &compile_target(90, (13, 0)));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{library:?}: {}: {e}", path.display()));
        assert_eq!(&bytes[..4], b"\x7fELF", "{library:?} is not ELF");
        let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
        assert_eq!(machine, 190, "{library:?}: e_machine {machine} is not EM_CUDA");
        let flags = u32::from_le_bytes([bytes[48], bytes[49], bytes[50], bytes[51]]);
        assert_eq!((flags >> 8) & 0xff, 90, "{library:?}: compiled for sm_{}", (flags >> 8) & 0xff);
    }

    // A second run finds everything and compiles nothing.
    let again = precompile(cache.path(), &cu13, Some(&cu13.join("lib")));
    assert!(String::from_utf8_lossy(&again.stdout).contains("10 libraries (0 compiled)"));
}

#[test]
fn what_is_missing_is_named() {
    let cu13 = wheels();
    let cache = tempfile::tempdir().expect("tempdir");
    let no_nvrtc = precompile(cache.path(), &cu13, None);
    assert_eq!(no_nvrtc.status.code(), Some(1));
    let err = String::from_utf8_lossy(&no_nvrtc.stderr);
    assert!(err.contains("NVRTC is not loadable") && err.contains("LD_LIBRARY_PATH"), "{err}");

    let no_headers = precompile(cache.path(), cache.path(), Some(&cu13.join("lib")));
    assert_eq!(no_headers.status.code(), Some(1));
    let err = String::from_utf8_lossy(&no_headers.stderr);
    assert!(err.contains("no cuda_fp16.h") && err.contains("--cuda-home"), "{err}");
}

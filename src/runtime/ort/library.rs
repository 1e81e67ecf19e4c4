//! Finding `libonnxruntime` and loading it, once per process.
//!
//! The `ort` crate is built with `load-dynamic`: nothing is linked at build
//! time, and the library is `dlopen`ed by [`ort::init_from`] the first time
//! a session is needed. Where it comes from, in order:
//!
//! 1. an explicit path (the CLI's `--ort-lib PATH`);
//! 2. the `ORT_DYLIB_PATH` environment variable (the `ort` crate's own
//!    convention, and what CI sets);
//! 3. the `onnxruntime` Python package: `$VIRTUAL_ENV/bin/python`, then
//!    `python3`, is asked where the package lives (without importing it) and
//!    its `capi/` folder is searched for `libonnxruntime.so*` — where
//!    `pip install onnxruntime` puts the library.
//!
//! A path that is given (1, 2) but does not exist is an error, not a reason
//! to look further: the user meant that file. The `ort` crate allows one
//! library and one environment per process, so the first successful load
//! wins; asking for a different file afterwards is an error too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

/// The environment variable naming the library (the `ort` crate's).
pub const ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";

/// What to do to make onnxq find the library; ends every "not found" error.
const HOW_TO_POINT: &str = "install it with `pip install onnxruntime==1.32.0` (in the active virtualenv or for `python3`), \
     or point onnxq at libonnxruntime.so with --ort-lib PATH or the ORT_DYLIB_PATH environment variable";

/// Why the library could not be found or loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LibraryError {
    /// No candidate file: each entry of `tried` says where onnxq looked and
    /// what it found there.
    #[error("onnxruntime library not found; tried:\n{}\n{HOW_TO_POINT}", numbered(.tried))]
    NotFound { tried: Vec<String> },
    /// A file was found but `dlopen` or the version check refused it.
    #[error("cannot load onnxruntime from {path} ({source_of_path}): {detail}\n{HOW_TO_POINT}")]
    Load {
        path: PathBuf,
        /// How the path was found (`--ort-lib`, `ORT_DYLIB_PATH`, `python3`).
        source_of_path: String,
        detail: String,
    },
    /// Another library is already loaded in this process.
    #[error("onnxruntime is already loaded from {loaded}; a process can load only one (asked for {requested})")]
    OtherLoaded { loaded: PathBuf, requested: PathBuf },
    /// The library loaded but the process-wide environment could not be made.
    #[error("onnxruntime loaded from {path}, but its environment could not be created: {detail}")]
    Environment { path: PathBuf, detail: String },
}

fn numbered(tried: &[String]) -> String {
    tried
        .iter()
        .enumerate()
        .map(|(i, t)| format!("  {}. {t}", i + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The loaded library.
#[derive(Debug)]
pub struct OrtLibrary {
    /// The file loaded (as found, not canonicalized).
    pub path: PathBuf,
    /// How it was found (`--ort-lib`, `ORT_DYLIB_PATH`, `python3`, …).
    pub found_by: String,
    /// ORT's version, `1.32.0`. The minor version is read from the library
    /// itself (`ort::util::probe`); the patch level from the file name the
    /// path resolves to (`libonnxruntime.so.1.32.0`) when it agrees, else
    /// `1.<minor>.x`.
    pub version: String,
    pub(super) env: Environment,
}

static LOADED: OnceLock<OrtLibrary> = OnceLock::new();
/// Serializes first loads; [`LOADED`] alone would let two threads race
/// into `ort::init_from`.
static LOADING: Mutex<()> = Mutex::new(());

/// Finds and loads the library (once per process) and returns it.
/// `explicit` is the `--ort-lib` path, if given.
pub fn load(explicit: Option<&Path>) -> Result<&'static OrtLibrary, LibraryError> {
    let (path, found_by) = find(explicit)?;
    if let Some(lib) = LOADED.get() {
        return same_or_error(lib, &path);
    }
    // A poisoned lock only means another thread panicked while loading;
    // `LOADED` is still either empty or complete.
    let _guard = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(lib) = LOADED.get() {
        return same_or_error(lib, &path);
    }
    let builder = ort::init_from(&path).map_err(|e| LibraryError::Load {
        path: path.clone(),
        source_of_path: found_by.clone(),
        detail: e.to_string(),
    })?;
    let env = builder
        .with_name("onnxq")
        .with_telemetry(false)
        .build()
        .map_err(|e| LibraryError::Environment {
            path: path.clone(),
            detail: e.to_string(),
        })?;
    let version = version_of(&path);
    Ok(LOADED.get_or_init(|| OrtLibrary {
        path,
        found_by,
        version,
        env,
    }))
}

/// The library already loaded in this process, if any.
pub fn loaded() -> Option<&'static OrtLibrary> {
    LOADED.get()
}

fn same_or_error(
    lib: &'static OrtLibrary,
    path: &Path,
) -> Result<&'static OrtLibrary, LibraryError> {
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    if canon(&lib.path) == canon(path) {
        Ok(lib)
    } else {
        Err(LibraryError::OtherLoaded {
            loaded: lib.path.clone(),
            requested: path.to_path_buf(),
        })
    }
}

/// Where the library is, and how that was found; see the module docs.
pub fn find(explicit: Option<&Path>) -> Result<(PathBuf, String), LibraryError> {
    let mut tried = Vec::new();
    match explicit {
        Some(p) => return given(p, "--ort-lib", tried),
        None => tried.push("--ort-lib: not given".to_string()),
    }
    match std::env::var_os(ORT_DYLIB_PATH) {
        Some(v) if !v.is_empty() => return given(Path::new(&v), ORT_DYLIB_PATH, tried),
        _ => tried.push(format!("{ORT_DYLIB_PATH}: not set")),
    }
    let mut pythons: Vec<PathBuf> = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        pythons.push(Path::new(&venv).join("bin").join("python"));
    } else {
        tried.push("$VIRTUAL_ENV: not set".to_string());
    }
    pythons.push(PathBuf::from("python3"));
    for py in pythons {
        match from_python(&py) {
            Ok(lib) => return Ok((lib, py.display().to_string())),
            Err(why) => tried.push(format!("{}: {why}", py.display())),
        }
    }
    Err(LibraryError::NotFound { tried })
}

fn given(p: &Path, how: &str, mut tried: Vec<String>) -> Result<(PathBuf, String), LibraryError> {
    if p.is_file() {
        Ok((p.to_path_buf(), how.to_string()))
    } else {
        tried.push(format!(
            "{how}: {} does not exist or is not a file",
            p.display()
        ));
        Err(LibraryError::NotFound { tried })
    }
}

/// Asks `python` where the `onnxruntime` package is (`find_spec` does not
/// import it, so no second copy of the library is loaded into Python) and
/// picks the library in its `capi/` folder.
fn from_python(python: &Path) -> Result<PathBuf, String> {
    const SCRIPT: &str = "import importlib.util as u; s = u.find_spec('onnxruntime'); \
         print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')";
    let out = Command::new(python)
        .args(["-c", SCRIPT])
        .output()
        .map_err(|e| format!("cannot run it ({e})"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").trim();
        return Err(format!("failed ({}): {last}", out.status));
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if dir.is_empty() {
        return Err("the onnxruntime package is not installed".to_string());
    }
    let capi = Path::new(&dir).join("capi");
    library_in(&capi).ok_or_else(|| format!("no libonnxruntime.so* in {}", capi.display()))
}

/// The ORT library in `dir`: `libonnxruntime.so`, `libonnxruntime.so.1.32.0`
/// (Linux), `libonnxruntime.1.32.0.dylib` (macOS) or `onnxruntime.dll`. The
/// providers' helper (`libonnxruntime_providers_shared.so`) is not it. With
/// several candidates, the last by name (the most specific version).
pub fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n == "onnxruntime.dll"
                || n.strip_prefix("libonnxruntime.")
                    .is_some_and(|rest| rest.starts_with("so") || rest.ends_with("dylib"))
        })
        .collect();
    names.sort();
    names.pop().map(|n| dir.join(n))
}

/// See [`OrtLibrary::version`].
fn version_of(path: &Path) -> String {
    let Some(minor) = ort::util::probe(path) else {
        return "unknown".to_string();
    };
    let file = path
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    // `libonnxruntime.so.1.32.0` or `libonnxruntime.1.32.0.dylib`.
    let from_name = file
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|s| s.trim_matches('.'))
        .find(|s| s.split('.').count() == 3 && s.split('.').all(|p| !p.is_empty()));
    match from_name {
        Some(v) if v.split('.').nth(1) == Some(minor.to_string().as_str()) => v.to_string(),
        _ => format!("1.{minor}.x"),
    }
}

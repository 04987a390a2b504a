//! A compiled-code cache (docs/cache.md): a model built for the JIT once is kept on disk as its
//! machine code with relocations (`hlstm_backends::cpu::image`), keyed by the model file's
//! content, the options and the hlstmc version, so that a second run of the same model skips
//! import, optimization, lowering and code generation: it reads the file (to hash it), reads
//! the entry, checks it and loads the code.
//!
//! An entry is written under a temporary name and renamed into place, so concurrent builders
//! of one entry both succeed and a reader sees a whole entry or none. Every entry carries a
//! checksum of its contents and its full key: a truncated or damaged entry, or one of another
//! key, is never used; it is rebuilt (with a warning for a damaged one) and replaced.

use crate::runtime::{Runnable, State, TensorInfo};
use crate::{BuildOptions, Engine, Error, Model, OptimizeOptions, Result};
use hlstm_backends::cpu::codegen::Keep;
use hlstm_backends::cpu::image::CodeImage;
use hlstm_backends::cpu::{CpuOptions, JitContext, JitProgram};
use hlstm_ir::timing::phase;
use hlstm_ir::{DType, Dim, Tensor, TensorType};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The first bytes of every entry.
const MAGIC: &[u8; 16] = b"HLSTMC-CACHE-v1\n";
/// The layout of an entry; part of the key.
const ENTRY_FORMAT: u32 = 1;

/// A cache folder, and the version string that is part of every key.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
    version: String,
}

/// What a lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The entry was there and whole: nothing was imported, optimized or compiled.
    Hit,
    /// No entry: the model was built and its entry written.
    Miss,
    /// An entry was there but damaged (the reason): it was rebuilt and replaced.
    Rebuilt(String),
}

impl Outcome {
    /// `hit`, `miss` or `rebuilt`.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Rebuilt(_) => "rebuilt",
        }
    }
}

/// A model from the cache, ready to run.
pub struct Cached {
    /// The model built for the JIT.
    pub runnable: Arc<dyn Runnable>,
    /// Whether it came from the cache.
    pub outcome: Outcome,
    /// The entry's file.
    pub path: PathBuf,
    /// The import's warnings, as [`Model::warnings`] gave them when the entry was made.
    pub warnings: Vec<String>,
    /// What the caller stored with the entry ([`Cache::load_or_build`]'s `extra`).
    pub extra: serde_json::Value,
}

/// Why a model is built without the cache (the caller builds it as usual from the model).
pub struct NotCached {
    /// The reason, one sentence.
    pub reason: String,
    /// The model, imported (and not optimized).
    pub model: Model,
}

/// 128 bits of hash over bytes: two 64-bit lanes of multiply-rotate over 8-byte words (at
/// memory speed; an integrity check and a content key, not a cryptographic hash).
fn hash128(data: &[u8]) -> [u64; 2] {
    const K1: u64 = 0x9E37_79B9_7F4A_7C15;
    const K2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    let mut a = [
        0x243F_6A88_85A3_08D3u64,
        0x1319_8A2E_0370_7344,
        0xA409_3822_299F_31D0,
        0x082E_FA98_EC4E_6C89,
    ];
    let mut b = [
        0x4528_21E6_38D0_1377u64,
        0xBE54_66CF_34E9_0C6C,
        0xC0AC_29B7_C97C_50DD,
        0x3F84_D5B5_B547_0917,
    ];
    let words = data.chunks_exact(8);
    let tail = words.remainder();
    for (i, w) in words.enumerate() {
        let v = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        let l = i & 3;
        a[l] = (a[l] ^ v).wrapping_mul(K1).rotate_left(31);
        b[l] = (b[l] ^ v.rotate_left(17)).wrapping_mul(K2).rotate_left(27);
    }
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    let v = u64::from_le_bytes(last) ^ ((data.len() as u64) << 3);
    let mix = |lanes: &[u64; 4], k: u64, seed: u64| {
        let mut h = seed ^ v.wrapping_mul(k);
        for l in lanes {
            h = (h ^ l).wrapping_mul(k).rotate_left(29);
        }
        h ^= h >> 32;
        h.wrapping_mul(k) ^ (h >> 29)
    };
    [mix(&a, K1, 0x5151), mix(&b, K2, 0xA3A3)]
}

fn hex(h: [u64; 2]) -> String {
    format!("{:016x}{:016x}", h[0], h[1])
}

/// The features of this CPU that code for `CpuIsa::Native` depends on.
fn host_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let mut f = Vec::new();
        macro_rules! feat {
            ($($n:tt),*) => {$(
                if std::is_x86_feature_detected!($n) { f.push($n); }
            )*};
        }
        feat!(
            "sse4.1", "sse4.2", "popcnt", "avx", "avx2", "fma", "bmi1", "bmi2", "lzcnt", "avx512f",
            "avx512vl", "avx512dq", "avx512bw"
        );
        f.join(",")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        String::from("not x86-64")
    }
}

/// This build's identity in the key: `VERSION+SOURCE_HASH` (build.rs).
const BUILD: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("HLSTMC_BUILD_ID"));

impl Cache {
    /// The cache in `dir` (created when an entry is first written), for this build of hlstmc:
    /// its version and the hash of the sources it was built from (build.rs), so that a
    /// rebuild with other code misses where the version number did not change.
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Self::with_version(dir, BUILD)
    }

    /// The cache in `dir` as a build of hlstmc of version `version` sees it: entries of other
    /// versions are not used (tests use this to show that a new version misses).
    pub fn with_version(dir: impl Into<PathBuf>, version: &str) -> Cache {
        Cache {
            dir: dir.into(),
            version: format!(
                "hlstmc {version}, entry format {ENTRY_FORMAT}, image format {}",
                hlstm_backends::cpu::image::IMAGE_FORMAT
            ),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key's text for a model of content hash `model` and these options: everything that
    /// changes the code.
    fn key_text(&self, model: [u64; 2], opt: &OptimizeOptions, build: &BuildOptions) -> String {
        let inst = &opt.instrumentation;
        format!(
            "{}\nmodel {}\npasses {:?}\nsaturate {:?}\nengine {}\nstrategy {:?}\ncpu {:?} ({})\nthreads {}\n",
            self.version,
            hex(model),
            opt.pipeline(),
            inst.saturate_limits,
            build.engine.name(),
            build.strategy,
            build.cpu,
            if build.cpu == crate::CpuIsa::Native {
                host_features()
            } else {
                String::new()
            },
            build.threads,
        )
    }

    /// The model at `path` built with `opt` and `build` for the JIT, from the cache or (on a
    /// miss, or a damaged entry) built and stored. `extra` is called on the optimized model of
    /// a miss; what it returns is stored with the entry and given back on every hit
    /// ([`Cached::extra`]). A model the cache does not take (see docs/cache.md) comes back
    /// imported as `Err(Ok(NotCached))`, for the caller to build as usual.
    #[allow(clippy::result_large_err)]
    pub fn load_or_build(
        &self,
        path: &Path,
        opt: &OptimizeOptions,
        build: &BuildOptions,
        extra: &dyn Fn(&Model) -> serde_json::Value,
    ) -> std::result::Result<Cached, Result<NotCached>> {
        let bytes = phase("import/read file", || {
            hlstm_frontends::onnx::read_model_file(path)
        })
        .map_err(|e| Err(Error::from(e)))?;
        let key = self.key_text(phase("import/hash", || hash128(&bytes)), opt, build);
        let file = self
            .dir
            .join(format!("{}.hlsc", hex(hash128(key.as_bytes()))));
        let mut outcome = Outcome::Miss;
        if let Ok(entry) = phase("cache/read entry", || std::fs::read(&file)) {
            match phase("cache/load", || load(&entry, &key, build)) {
                Ok(Some((runnable, warnings, extra))) => {
                    return Ok(Cached {
                        runnable,
                        outcome: Outcome::Hit,
                        path: file,
                        warnings,
                        extra,
                    });
                }
                // Another key hashed to the same name: replaced below.
                Ok(None) => {}
                Err(why) => outcome = Outcome::Rebuilt(why),
            }
        }
        let dir = path.parent().map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        });
        let model = Model::from_bytes(&bytes, dir).map_err(Err)?;
        drop(bytes);
        if build.engine != Engine::Jit {
            return Err(Ok(NotCached {
                reason: format!("the cache holds JIT code; --engine {}", build.engine.name()),
                model,
            }));
        }
        if !model.has_static_inputs() {
            return Err(Ok(NotCached {
                reason: "the model's input shapes are not all static".into(),
                model,
            }));
        }
        if !model.stored_types().is_empty() {
            return Err(Ok(NotCached {
                reason: "the model stores float16, bfloat16 or float64 values".into(),
                model,
            }));
        }
        if !build.input_patterns.is_empty() {
            return Err(Ok(NotCached {
                reason: "masked run-time weights".into(),
                model,
            }));
        }
        let warnings = model.warnings().to_vec();
        let model = phase("optimize", || model.optimize(opt)).map_err(Err)?;
        let (program, plain) = crate::engines::lower_plain(model.graph(), build).map_err(Err)?;
        if !plain {
            return Err(Ok(NotCached {
                reason: "an input is fed one-hot".into(),
                model,
            }));
        }
        let jit = phase("compile/codegen", || {
            crate::engines::compile_jit_keep(
                &program,
                build,
                Keep {
                    image: true,
                    ..Keep::default()
                },
            )
        })
        .map_err(Err)?;
        let meta = Meta {
            inputs: model.inputs(),
            outputs: model.outputs(),
            output_dims: program
                .outputs
                .iter()
                .map(|b| program.buffers[b.0].dims.clone())
                .collect(),
            warnings,
            extra: extra(&model),
        };
        drop(program);
        let image = match jit.image() {
            Ok(i) => i.to_bytes(),
            Err(e) => {
                return Err(Ok(NotCached {
                    reason: format!("its code cannot be cached ({e})"),
                    model,
                }));
            }
        };
        let entry = encode(&key, &meta, &image);
        // A cache that cannot be written is not an error: the model runs; the caller is told.
        let stored = phase("cache/write entry", || {
            write_entry(&self.dir, &file, &entry)
        });
        if let Err(e) = stored {
            outcome = Outcome::Rebuilt(format!("cannot write {}: {e}", file.display()));
        }
        let runnable = CachedRunnable::new(jit, &meta);
        Ok(Cached {
            runnable: Arc::new(runnable),
            outcome,
            path: file,
            warnings: meta.warnings,
            extra: meta.extra,
        })
    }
}

/// What an entry holds besides the code.
struct Meta {
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    output_dims: Vec<Vec<usize>>,
    warnings: Vec<String>,
    extra: serde_json::Value,
}

fn info_json(i: &TensorInfo) -> serde_json::Value {
    let dims: Option<Vec<usize>> =
        i.ty.shape
            .as_ref()
            .map(|s| s.iter().map(|d| d.known().unwrap_or(0)).collect());
    serde_json::json!({ "name": i.name, "dtype": i.ty.dtype.name(), "dims": dims })
}

fn info_of(v: &serde_json::Value) -> Option<TensorInfo> {
    let dtype = match v["dtype"].as_str()? {
        n if n == DType::F32.name() => DType::F32,
        n if n == DType::I64.name() => DType::I64,
        n if n == DType::I32.name() => DType::I32,
        n if n == DType::Bool.name() => DType::Bool,
        _ => return None,
    };
    let shape = match &v["dims"] {
        serde_json::Value::Null => None,
        d => Some(
            d.as_array()?
                .iter()
                .map(|x| x.as_u64().map(|n| Dim::Known(n as usize)))
                .collect::<Option<Vec<_>>>()?,
        ),
    };
    Some(TensorInfo {
        name: v["name"].as_str()?.to_string(),
        ty: TensorType { dtype, shape },
    })
}

/// MAGIC, the payload's length and checksum (u64 each), the payload: the key's length and
/// text, the metadata's length and JSON, the code image.
fn encode(key: &str, meta: &Meta, image: &[u8]) -> Vec<u8> {
    let json = serde_json::json!({
        "inputs": meta.inputs.iter().map(info_json).collect::<Vec<_>>(),
        "outputs": meta.outputs.iter().map(info_json).collect::<Vec<_>>(),
        "output_dims": meta.output_dims,
        "warnings": meta.warnings,
        "extra": meta.extra,
    })
    .to_string();
    let mut payload = Vec::with_capacity(16 + key.len() + json.len() + image.len());
    for part in [key.as_bytes(), json.as_bytes()] {
        payload.extend_from_slice(&(part.len() as u64).to_le_bytes());
        payload.extend_from_slice(part);
    }
    payload.extend_from_slice(image);
    let mut out = Vec::with_capacity(32 + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&hash128(&payload)[0].to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

type Loaded = (Arc<dyn Runnable>, Vec<String>, serde_json::Value);

/// An entry checked and loaded: `Ok(None)` when it holds another key, `Err` (the reason) when
/// it is damaged.
fn load(
    entry: &[u8],
    key: &str,
    build: &BuildOptions,
) -> std::result::Result<Option<Loaded>, String> {
    let head = 16 + 8 + 8;
    if entry.len() < head || &entry[..16] != MAGIC {
        return Err("it does not start as a cache entry".into());
    }
    let len = u64::from_le_bytes(entry[16..24].try_into().expect("8 bytes"));
    let sum = u64::from_le_bytes(entry[24..32].try_into().expect("8 bytes"));
    let payload = &entry[head..];
    if payload.len() as u64 != len {
        return Err(format!(
            "it is truncated or extended ({} bytes of payload, {len} expected)",
            payload.len()
        ));
    }
    if hash128(payload)[0] != sum {
        return Err("its checksum does not match its contents".into());
    }
    let mut rest = payload;
    let mut part = || -> std::result::Result<&[u8], String> {
        if rest.len() < 8 {
            return Err("a part is missing".into());
        }
        let n = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
        let n = usize::try_from(n).map_err(|_| "a part too long".to_string())?;
        if n > rest.len() - 8 {
            return Err("a part is cut off".into());
        }
        let p = &rest[8..8 + n];
        rest = &rest[8 + n..];
        Ok(p)
    };
    if part()? != key.as_bytes() {
        return Ok(None);
    }
    let json: serde_json::Value =
        serde_json::from_slice(part()?).map_err(|e| format!("its metadata: {e}"))?;
    let image = CodeImage::from_bytes(rest)?;
    let infos = |k: &str| {
        json[k]
            .as_array()
            .and_then(|a| a.iter().map(info_of).collect::<Option<Vec<_>>>())
            .ok_or_else(|| format!("its metadata has no valid {k}"))
    };
    let output_dims: Vec<Vec<usize>> = serde_json::from_value(json["output_dims"].clone())
        .map_err(|e| format!("its metadata: {e}"))?;
    let meta = Meta {
        inputs: infos("inputs")?,
        outputs: infos("outputs")?,
        output_dims,
        warnings: serde_json::from_value(json["warnings"].clone()).unwrap_or_default(),
        extra: json["extra"].clone(),
    };
    if meta.inputs.len() != image.steps.inputs.len()
        || meta.outputs.len() != image.steps.outputs.len()
        || meta.output_dims.len() != meta.outputs.len()
    {
        return Err("its metadata does not match its code".into());
    }
    let cpu = CpuOptions {
        isa: build.cpu,
        ..CpuOptions::default()
    };
    let jit = JitProgram::from_image(&image, &cpu)?;
    let r = CachedRunnable::new(jit, &meta);
    Ok(Some((Arc::new(r), meta.warnings, meta.extra)))
}

/// Writes `bytes` to `file` in `dir` through a temporary file of a name no other writer uses,
/// renamed into place.
fn write_entry(dir: &Path, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(
        ".{}.{}.{}.{nanos}.tmp",
        file.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    crate::files::write_through(&tmp, file, bytes)
}

/// A model run from cached code: the JIT program and what a call needs, shared with its
/// states.
struct CachedRunnable(Arc<Inner>);

struct Inner {
    jit: JitProgram,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    output_dims: Vec<Vec<usize>>,
}

impl CachedRunnable {
    fn new(jit: JitProgram, meta: &Meta) -> CachedRunnable {
        // The kernel engines compute f32 outputs.
        let outputs = meta
            .outputs
            .iter()
            .zip(&meta.output_dims)
            .map(|(o, d)| TensorInfo {
                name: o.name.clone(),
                ty: TensorType::new(DType::F32, d.iter().map(|&n| Dim::Known(n)).collect()),
            })
            .collect();
        CachedRunnable(Arc::new(Inner {
            jit,
            inputs: meta.inputs.clone(),
            outputs,
            output_dims: meta.output_dims.clone(),
        }))
    }
}

impl Runnable for CachedRunnable {
    fn engine(&self) -> Engine {
        Engine::Jit
    }
    fn inputs(&self) -> &[TensorInfo] {
        &self.0.inputs
    }
    fn outputs(&self) -> &[TensorInfo] {
        &self.0.outputs
    }
    fn streamable(&self) -> bool {
        self.0.jit.streamable()
    }
    fn new_state(&self) -> Result<Box<dyn State>> {
        Ok(Box::new(CachedState {
            ctx: self.0.jit.new_context(),
            resume: false,
            owner: Arc::clone(&self.0),
        }))
    }
}

/// A state of a [`CachedRunnable`]: its own workspace.
struct CachedState {
    ctx: JitContext,
    resume: bool,
    owner: Arc<Inner>,
}

impl CachedState {
    fn call(&mut self, inputs: &[Tensor], resume: bool, out: &mut Vec<Tensor>) -> Result<()> {
        let r = Arc::clone(&self.owner);
        let (max, dynamic) = r.jit.max_steps();
        crate::runtime::check_inputs(&r.inputs, inputs).or_else(|e| {
            // A dynamic program takes fewer steps along axis 0; its lengths are checked below.
            if dynamic { Ok(()) } else { Err(e) }
        })?;
        let steps = if dynamic {
            inputs
                .iter()
                .enumerate()
                .find(|(k, _)| r.jit.input_len(*k, 1) != r.jit.input_len(*k, max))
                .map_or(max, |(_, t)| t.shape().first().copied().unwrap_or(max))
        } else {
            max
        };
        let flat: Vec<std::borrow::Cow<[f32]>> = inputs
            .iter()
            .enumerate()
            .map(|(k, t)| match t.as_f32() {
                Some(a) => Ok(match a.as_slice() {
                    Some(s) => std::borrow::Cow::Borrowed(s),
                    None => std::borrow::Cow::Owned(a.iter().copied().collect()),
                }),
                None if t.dtype() != DType::Bool => {
                    let f = t.cast(DType::F32);
                    Ok(std::borrow::Cow::Owned(
                        f.as_f32()
                            .into_iter()
                            .flat_map(|a| a.iter().copied())
                            .collect(),
                    ))
                }
                None => Err(Error::input(
                    &r.inputs[k].name,
                    "is bool: the JIT takes f32 inputs only (and integer sequence lengths)",
                )),
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&[f32]> = flat.iter().map(|v| v.as_ref()).collect();
        let dims: Vec<Vec<usize>> = r
            .output_dims
            .iter()
            .enumerate()
            .map(|(k, d)| {
                let mut d = d.clone();
                if dynamic && r.jit.output_len(k, 1) != r.jit.output_len(k, max) && !d.is_empty() {
                    d[0] = steps;
                }
                d
            })
            .collect();
        let reusable = out.len() == dims.len()
            && out.iter().zip(&dims).all(|(t, d)| {
                t.shape() == d.as_slice() && t.as_f32().is_some_and(|a| a.is_standard_layout())
            });
        if !reusable {
            *out = dims.iter().map(|d| Tensor::zeros(DType::F32, d)).collect();
        }
        let mut views: Vec<&mut [f32]> = out
            .iter_mut()
            .filter_map(|t| match t {
                Tensor::F32(a) => a.as_slice_mut(),
                _ => None,
            })
            .collect();
        r.jit
            .run_in(&mut self.ctx, &refs, &mut views, Some(steps), resume)
            .map_err(Error::Run)
    }
}

crate::engines::kernel::resumable_state!(CachedState);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_sees_every_byte_and_the_length() {
        let a = vec![7u8; 1000];
        let mut b = a.clone();
        b[999] = 8;
        assert_ne!(hash128(&a), hash128(&b));
        assert_ne!(hash128(&a), hash128(&a[..999]));
        assert_eq!(hash128(&a), hash128(&a.clone()));
    }

    /// A build of the same version number from other sources is another key: the version
    /// carries the sources' hash, which this workspace's build computes.
    #[test]
    fn the_key_names_the_build_not_only_the_version() {
        let this = Cache::new("d");
        let same_number = Cache::with_version("d", env!("CARGO_PKG_VERSION"));
        assert_ne!(this.version, same_number.version);
        let id = BUILD.rsplit('+').next().unwrap();
        assert!(
            id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "{BUILD}"
        );
        assert!(this.version.contains(BUILD));
    }
}

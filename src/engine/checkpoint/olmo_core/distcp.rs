//! torch.distributed.checkpoint folders: the pickled `.metadata` index and the `__R_N.distcp`
//! files, in which every chunk is a standalone `torch.save` zip archive.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Component, Path, PathBuf};

use candle_core::{DType, Device, Tensor, WithDType};
use memmap2::Mmap;

use super::pickle::{self, Pickle, Value};
use crate::error::input_error;

/// The classes a `.metadata` index may name.
pub const METADATA_CLASSES: &[&str] = &[
    "torch.distributed.checkpoint.metadata.Metadata",
    "torch.distributed.checkpoint.metadata.TensorStorageMetadata",
    "torch.distributed.checkpoint.metadata.BytesStorageMetadata",
    "torch.distributed.checkpoint.metadata.TensorProperties",
    "torch.distributed.checkpoint.metadata.ChunkStorageMetadata",
    "torch.distributed.checkpoint.metadata.MetadataIndex",
    "torch.distributed.checkpoint.metadata.StorageMeta",
    "torch.distributed.checkpoint.metadata._MEM_FORMAT_ENCODING",
    "torch.distributed.checkpoint.filesystem._StorageInfo",
    "olmo_core.distributed.checkpoint.filesystem._StorageInfo",
    "torch.serialization._get_layout",
    "torch.Size",
    "collections.OrderedDict",
    "torch.float32",
    "torch.bfloat16",
    "torch.float16",
    "torch.float64",
    "torch.int64",
    "torch.int32",
    "torch.int16",
    "torch.int8",
    "torch.uint8",
    "torch.bool",
];

/// The classes the `data.pkl` of a chunk may name.
pub const BLOB_CLASSES: &[&str] = &[
    "torch._utils._rebuild_tensor_v2",
    "collections.OrderedDict",
    "torch.FloatStorage",
    "torch.BFloat16Storage",
    "torch.HalfStorage",
    "torch.DoubleStorage",
    "torch.LongStorage",
    "torch.IntStorage",
    "torch.ShortStorage",
    "torch.CharStorage",
    "torch.ByteStorage",
    "torch.BoolStorage",
];

/// Where one chunk of a tensor lives.
#[derive(Debug, Clone)]
struct Chunk {
    offsets: Vec<usize>,
    sizes: Vec<usize>,
    file: usize,
    offset: usize,
    length: usize,
}

/// A tensor of the index: dtype, full shape and its chunks.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    /// The dtype it was saved in.
    pub dtype: DType,
    /// The full (unsharded) shape.
    pub shape: Vec<usize>,
    chunks: Vec<Chunk>,
}

/// The entries of a DCP folder under one prefix, with their files mapped.
pub struct DcpFolder {
    dir: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    tensors: HashMap<String, TensorEntry>,
}

impl DcpFolder {
    /// Reads `dir/.metadata` and maps the files holding the tensors named `prefix…` (the prefix
    /// is dropped from the names). Every chunk must lie inside its file.
    pub fn open(dir: &Path, prefix: &str) -> anyhow::Result<Self> {
        let meta_path = dir.join(".metadata");
        let bad = |why: String| input_error(format!("{}: {why}", meta_path.display()));
        let data = std::fs::read(&meta_path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let pk = pickle::parse(&data, METADATA_CLASSES).map_err(bad)?;
        let index = Index::read(&pk, prefix).map_err(bad)?;
        let mut files: Vec<(PathBuf, Mmap)> = Vec::new();
        let mut file_ids: HashMap<String, usize> = HashMap::new();
        let mut tensors = HashMap::new();
        for (name, (dtype, shape, chunk_meta)) in index.tensors {
            let short = name.strip_prefix(prefix).unwrap_or(&name).to_owned();
            let mut chunks = Vec::with_capacity(chunk_meta.len());
            for (offsets, sizes) in chunk_meta {
                let loc = index
                    .storage
                    .get(&(name.clone(), offsets.clone()))
                    .ok_or_else(|| {
                        bad(format!(
                            "no storage entry for a chunk of `{name}` at {offsets:?}"
                        ))
                    })?;
                let file = match file_ids.get(&loc.path) {
                    Some(&i) => i,
                    None => {
                        let path = dir.join(safe_relative(&loc.path).map_err(&bad)?);
                        let f = File::open(&path).map_err(|e| {
                            input_error(format!("{}: cannot open: {e}", path.display()))
                        })?;
                        // SAFETY: mapped read-only; checkpoint folders are complete (renamed from
                        // `stepN-tmp`) before filtermon reads them and are never written after.
                        let map = unsafe { Mmap::map(&f) }.map_err(|e| {
                            input_error(format!("{}: cannot map: {e}", path.display()))
                        })?;
                        files.push((path, map));
                        file_ids.insert(loc.path.clone(), files.len() - 1);
                        files.len() - 1
                    }
                };
                let (path, map) = &files[file];
                let end = loc.offset.checked_add(loc.length);
                if end.is_none_or(|e| e > map.len()) {
                    return Err(input_error(format!(
                        "{}: truncated: a chunk of `{name}` needs bytes {}..{} but the file has {}",
                        path.display(),
                        loc.offset,
                        loc.offset.saturating_add(loc.length),
                        map.len()
                    )));
                }
                chunks.push(Chunk {
                    offsets,
                    sizes,
                    file,
                    offset: loc.offset,
                    length: loc.length,
                });
            }
            check_cover(&name, &shape, &chunks).map_err(&bad)?;
            tensors.insert(
                short,
                TensorEntry {
                    dtype,
                    shape,
                    chunks,
                },
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            tensors,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry of `name`, if present.
    pub fn entry(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.get(name)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether no tensor matched the prefix.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The whole tensor `name` on the CPU in its saved dtype, reassembled from its chunks.
    pub fn load(&self, name: &str) -> anyhow::Result<Tensor> {
        let entry = self
            .tensors
            .get(name)
            .ok_or_else(|| input_error(format!("{}: no tensor `{name}`", self.dir.display())))?;
        let es = entry.dtype.size_in_bytes();
        // `check_cover` bounded the product when the folder was opened.
        let numel: usize = entry.shape.iter().product();
        // Every chunk is decoded (and found to hold its elements) before the buffer is sized,
        // so a shape in the index cannot allocate more than the files hold.
        let parts = entry
            .chunks
            .iter()
            .map(|c| self.chunk(name, entry, c))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let [part] = parts.as_slice() {
            if part.contiguous {
                return tensor_from_bytes(
                    &part.storage[part.start * es..(part.start + numel) * es],
                    entry.dtype,
                    &entry.shape,
                );
            }
        }
        let mut buf = vec![0u8; numel * es];
        for (part, c) in parts.iter().zip(&entry.chunks) {
            scatter(part, c, &entry.shape, es, &mut buf);
        }
        tensor_from_bytes(&buf, entry.dtype, &entry.shape)
    }

    /// Decodes the torch.save archive of one chunk and checks it against the index.
    fn chunk<'a>(&'a self, name: &str, entry: &TensorEntry, c: &Chunk) -> anyhow::Result<Part<'a>> {
        let (path, map) = &self.files[c.file];
        let bad = |why: String| {
            input_error(format!(
                "{}: chunk of `{name}` at byte {}: {why}",
                path.display(),
                c.offset
            ))
        };
        let blob = &map[c.offset..c.offset + c.length];
        let mut zip = zip::ZipArchive::new(Cursor::new(blob))
            .map_err(|e| bad(format!("not a torch.save archive: {e}")))?;
        let pkl_name = zip
            .file_names()
            .filter_map(Result::ok)
            .find(|n| n.ends_with("/data.pkl"))
            .map(|n| n.into_owned())
            .ok_or_else(|| bad("no data.pkl in the archive".into()))?;
        let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];
        if let Ok(mut f) = zip.by_name(&format!("{prefix}byteorder")) {
            let mut order = String::new();
            f.read_to_string(&mut order)
                .map_err(|e| bad(format!("byteorder: {e}")))?;
            if order != "little" {
                return Err(bad(format!("byte order `{order}` is not supported")));
            }
        }
        let mut pkl = Vec::new();
        zip.by_name(&pkl_name)
            .and_then(|mut f| Ok(f.read_to_end(&mut pkl)?))
            .map_err(|e| bad(format!("data.pkl: {e}")))?;
        let pk = pickle::parse(&pkl, BLOB_CLASSES).map_err(&bad)?;
        let t = Rebuild::read(&pk).map_err(&bad)?;
        if t.dtype != entry.dtype {
            return Err(bad(format!(
                "stored as {:?}, the index says {:?}",
                t.dtype, entry.dtype
            )));
        }
        if t.size != c.sizes {
            return Err(bad(format!(
                "has shape {:?}, the index says {:?}",
                t.size, c.sizes
            )));
        }
        let f = zip
            .by_name(&format!("{prefix}data/{}", t.key))
            .map_err(|e| bad(format!("storage {}: {e}", t.key)))?;
        if f.compression() != zip::CompressionMethod::Stored {
            return Err(bad("compressed storage is not supported".into()));
        }
        let start = f
            .data_start()
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| bad("storage offset unknown".into()))?;
        let len = usize::try_from(f.size()).map_err(|_| bad("storage too large".into()))?;
        let es = t.dtype.size_in_bytes();
        if start.checked_add(len).is_none_or(|e| e > blob.len())
            || t.numel.checked_mul(es).is_none_or(|n| len < n)
        {
            return Err(bad("storage is truncated".into()));
        }
        let storage = &blob[start..start + len];
        if t.size.len() != t.stride.len() {
            return Err(bad("size and stride differ in length".into()));
        }
        // `size` equals the index's chunk sizes, whose product `check_cover` bounded. A view
        // holding more elements than its storage has room for (stride-0 broadcasts) would make
        // `load` allocate for elements the file does not hold.
        let view_numel = t.size.iter().product::<usize>();
        if view_numel.checked_mul(es).is_none_or(|n| n > storage.len()) {
            return Err(bad("view holds more elements than its storage".into()));
        }
        // The furthest element the view reaches must lie inside the storage.
        let reach = t
            .size
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |acc, (&n, &s)| {
                n.saturating_sub(1)
                    .checked_mul(s)
                    .and_then(|r| acc.checked_add(r))
            });
        let past = |r: usize| r.checked_add(1).and_then(|r| r.checked_mul(es));
        if view_numel > 0 && reach.and_then(past).is_none_or(|end| end > storage.len()) {
            return Err(bad("view reaches past its storage".into()));
        }
        let contiguous =
            t.stride == contiguous_strides(&t.size) || t.size.iter().product::<usize>() <= 1;
        Ok(Part {
            storage,
            // An empty view reads nothing, whatever offset it names.
            start: if view_numel == 0 { 0 } else { t.offset },
            size: t.size,
            stride: t.stride,
            contiguous,
        })
    }
}

/// An owned CPU tensor from little-endian bytes in one copy. DCP packs torch.save blobs at
/// arbitrary offsets, so the bytes are usually unaligned, where candle's `from_raw_buffer` would
/// copy twice.
fn tensor_from_bytes(bytes: &[u8], dtype: DType, shape: &[usize]) -> anyhow::Result<Tensor> {
    fn owned<T: WithDType>(bytes: &[u8], shape: &[usize]) -> candle_core::Result<Tensor> {
        let n = bytes.len() / std::mem::size_of::<T>();
        let mut v: Vec<T> = Vec::with_capacity(n);
        // SAFETY: `v` has room for `n` elements, exactly the bytes copied (the caller's slice holds
        // whole elements); every bit pattern is a valid value of these plain numeric types.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                v.as_mut_ptr().cast::<u8>(),
                n * std::mem::size_of::<T>(),
            );
            v.set_len(n);
        }
        Tensor::from_vec(v, shape, &Device::Cpu)
    }
    Ok(match dtype {
        DType::F32 => owned::<f32>(bytes, shape)?,
        DType::BF16 => owned::<half::bf16>(bytes, shape)?,
        DType::F16 => owned::<half::f16>(bytes, shape)?,
        DType::F64 => owned::<f64>(bytes, shape)?,
        other => Tensor::from_raw_buffer(bytes, other, shape, &Device::Cpu)?,
    })
}

/// A chunk's view into its storage bytes.
struct Part<'a> {
    storage: &'a [u8],
    start: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
    contiguous: bool,
}

/// Copies a chunk into its place in the full row-major buffer, row by row.
fn scatter(part: &Part, c: &Chunk, full: &[usize], es: usize, buf: &mut [u8]) {
    let full_stride = contiguous_strides(full);
    let nd = part.size.len();
    let numel: usize = part.size.iter().product();
    if numel == 0 {
        return;
    }
    if nd == 0 {
        let src = part.start * es;
        buf[..es].copy_from_slice(&part.storage[src..src + es]);
        return;
    }
    let last = part.size[nd - 1];
    let mut idx = vec![0usize; nd - 1];
    for _ in 0..numel / last {
        let src: usize = part.start
            + idx
                .iter()
                .zip(&part.stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        let dst: usize = (0..nd)
            .map(|d| (c.offsets[d] + idx.get(d).copied().unwrap_or(0)) * full_stride[d])
            .sum();
        if part.stride[nd - 1] == 1 {
            buf[dst * es..(dst + last) * es]
                .copy_from_slice(&part.storage[src * es..(src + last) * es]);
        } else {
            for j in 0..last {
                let s = (src + j * part.stride[nd - 1]) * es;
                buf[(dst + j) * es..(dst + j + 1) * es].copy_from_slice(&part.storage[s..s + es]);
            }
        }
        // Advance the multi-index over all but the last dimension.
        for d in (0..nd - 1).rev() {
            idx[d] += 1;
            if idx[d] < part.size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    // Saturating: a shape with a zero dimension has a bounded product but may have huge
    // strides, which only ever get compared.
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1].saturating_mul(shape[d + 1]);
    }
    s
}

/// The chunks must lie inside the tensor and together hold exactly its elements. The sizes
/// come from the file, so all arithmetic on them is checked.
fn check_cover(name: &str, shape: &[usize], chunks: &[Chunk]) -> Result<(), String> {
    let product = |dims: &[usize]| dims.iter().try_fold(1usize, |p, &n| p.checked_mul(n));
    let numel =
        product(shape).ok_or_else(|| format!("`{name}` has an impossible shape {shape:?}"))?;
    let mut covered = 0usize;
    for c in chunks {
        if c.offsets.len() != shape.len()
            || c.sizes.len() != shape.len()
            || c.offsets
                .iter()
                .zip(&c.sizes)
                .zip(shape)
                .any(|((o, s), n)| o.checked_add(*s).is_none_or(|e| e > *n))
        {
            return Err(format!(
                "a chunk of `{name}` ({:?} at {:?}) lies outside its shape {shape:?}",
                c.sizes, c.offsets
            ));
        }
        // Inside the shape, so its product is at most `numel`.
        covered = covered.saturating_add(c.sizes.iter().product::<usize>());
    }
    if covered != numel {
        return Err(format!(
            "the chunks of `{name}` hold {covered} of its {numel} elements (a chunk is missing)"
        ));
    }
    Ok(())
}

/// A `relative_path` as a path inside the folder: one plain file name.
fn safe_relative(p: &str) -> Result<&Path, String> {
    let path = Path::new(p);
    let mut comps = path.components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(_)), None) if !p.contains('\\') => Ok(path),
        _ => Err(format!("storage path `{p}` leaves the checkpoint folder")),
    }
}

struct Location {
    path: String,
    offset: usize,
    length: usize,
}

type ChunkMeta = (Vec<usize>, Vec<usize>);

/// A tensor as the index describes it: dtype, full shape, chunks (offsets, sizes).
type IndexedTensor = (DType, Vec<usize>, Vec<ChunkMeta>);

/// What `.metadata` says: tensors (dtype, shape, chunks) and where each chunk is stored.
struct Index {
    tensors: Vec<(String, IndexedTensor)>,
    storage: HashMap<(String, Vec<usize>), Location>,
}

impl Index {
    /// The entries whose names start with `prefix` (the optimizer's are never decoded further).
    fn read(pk: &Pickle, prefix: &str) -> Result<Self, String> {
        let root = Obj::new(
            pk,
            pk.root,
            "torch.distributed.checkpoint.metadata.Metadata",
        )?;
        let mut tensors = Vec::new();
        for &(k, v) in dict(pk, root.field("state_dict_metadata")?)? {
            let name = string(pk, k)?;
            if !name.starts_with(prefix) {
                continue;
            }
            let class = class_of(pk, v)?;
            if class.ends_with(".BytesStorageMetadata") {
                return Err(format!("`{name}` is not a tensor"));
            }
            let t = Obj::new(
                pk,
                v,
                "torch.distributed.checkpoint.metadata.TensorStorageMetadata",
            )?;
            let dtype = properties_dtype(pk, t.field("properties")?)?;
            let shape = size(pk, t.field("size")?)?;
            let chunks = list(pk, t.field("chunks")?)?
                .iter()
                .map(|&c| {
                    let c = Obj::new(
                        pk,
                        c,
                        "torch.distributed.checkpoint.metadata.ChunkStorageMetadata",
                    )?;
                    Ok((size(pk, c.field("offsets")?)?, size(pk, c.field("sizes")?)?))
                })
                .collect::<Result<Vec<_>, String>>()?;
            let Some(dtype) = dtype else {
                return Err(format!("`{name}` has a dtype filtermon cannot load"));
            };
            tensors.push((name, (dtype, shape, chunks)));
        }
        let mut storage = HashMap::new();
        for &(k, v) in dict(pk, root.field("storage_data")?)? {
            let idx = Obj::new(pk, k, "torch.distributed.checkpoint.metadata.MetadataIndex")?;
            let fqn = string(pk, idx.field("fqn")?)?;
            if !fqn.starts_with(prefix) {
                continue;
            }
            let offset = match pk.get(idx.field("offset")?) {
                Value::None => Vec::new(),
                _ => size(pk, idx.field("offset")?)?,
            };
            let info = Obj::any(pk, v)?;
            if !info.class.ends_with("._StorageInfo") {
                return Err(format!("storage entry of class `{}`", info.class));
            }
            if let Some(t) = info.opt_field("transform_descriptors") {
                if !matches!(pk.get(t), Value::None) && !list(pk, t)?.is_empty() {
                    return Err(format!("`{fqn}` is stored with transforms (not supported)"));
                }
            }
            storage.insert(
                (fqn, offset),
                Location {
                    path: string(pk, info.field("relative_path")?)?,
                    offset: uint(pk, info.field("offset")?)?,
                    length: uint(pk, info.field("length")?)?,
                },
            );
        }
        Ok(Self { tensors, storage })
    }
}

/// The arguments of `_rebuild_tensor_v2(storage, offset, size, stride, ...)`.
struct Rebuild {
    dtype: DType,
    key: String,
    numel: usize,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

impl Rebuild {
    fn read(pk: &Pickle) -> Result<Self, String> {
        let Value::Object { class, args, .. } = pk.get(pk.root) else {
            return Err("data.pkl does not hold a tensor".into());
        };
        if class != "torch._utils._rebuild_tensor_v2" || args.len() < 4 {
            return Err(format!("data.pkl holds a `{class}`, not a tensor"));
        }
        let Value::Persistent(pid) = pk.get(args[0]) else {
            return Err("tensor without a storage record".into());
        };
        let rec = tuple(pk, *pid)?;
        if rec.len() != 5 || string(pk, rec[0])? != "storage" {
            return Err("malformed storage record".into());
        }
        let Value::Global(storage_class) = pk.get(rec[1]) else {
            return Err("malformed storage type".into());
        };
        let dtype = storage_dtype(storage_class)
            .ok_or_else(|| format!("storage type `{storage_class}` cannot be loaded"))?;
        Ok(Self {
            dtype,
            key: string(pk, rec[2])?,
            numel: uint(pk, rec[4])?,
            offset: uint(pk, args[1])?,
            size: ints(pk, args[2])?,
            stride: ints(pk, args[3])?,
        })
    }
}

fn storage_dtype(class: &str) -> Option<DType> {
    Some(match class {
        "torch.FloatStorage" => DType::F32,
        "torch.BFloat16Storage" => DType::BF16,
        "torch.HalfStorage" => DType::F16,
        "torch.DoubleStorage" => DType::F64,
        "torch.LongStorage" => DType::I64,
        "torch.ByteStorage" | "torch.BoolStorage" => DType::U8,
        _ => return None,
    })
}

/// `TensorProperties`' dtype: the first item of its tuple state (or a `dtype` field).
fn properties_dtype(pk: &Pickle, id: usize) -> Result<Option<DType>, String> {
    let p = Obj::new(
        pk,
        id,
        "torch.distributed.checkpoint.metadata.TensorProperties",
    )?;
    let dtype = match p.state.map(|s| pk.get(s)) {
        Some(Value::Tuple(items)) if !items.is_empty() => items[0],
        _ => p.field("dtype")?,
    };
    let Value::Global(g) = pk.get(dtype) else {
        return Err("TensorProperties without a dtype".into());
    };
    Ok(match g.as_str() {
        "torch.float32" => Some(DType::F32),
        "torch.bfloat16" => Some(DType::BF16),
        "torch.float16" => Some(DType::F16),
        "torch.float64" => Some(DType::F64),
        "torch.int64" => Some(DType::I64),
        "torch.uint8" | "torch.bool" => Some(DType::U8),
        _ => None,
    })
}

/// An object node: its class and the fields of its state.
struct Obj<'a> {
    pk: &'a Pickle,
    class: &'a str,
    state: Option<usize>,
}

impl<'a> Obj<'a> {
    fn any(pk: &'a Pickle, id: usize) -> Result<Self, String> {
        match pk.get(id) {
            Value::Object { class, state, .. } => Ok(Self {
                pk,
                class,
                state: *state,
            }),
            other => Err(format!("expected an object, found {other:?}")),
        }
    }

    fn new(pk: &'a Pickle, id: usize, class: &str) -> Result<Self, String> {
        let o = Self::any(pk, id)?;
        if o.class != class {
            return Err(format!("expected a `{class}`, found a `{}`", o.class));
        }
        Ok(o)
    }

    /// A field of the state: a dict, or `(dict | None, slots dict)` for slotted dataclasses.
    fn opt_field(&self, name: &str) -> Option<usize> {
        let dicts: Vec<usize> = match self.state.map(|s| self.pk.get(s)) {
            Some(Value::Dict(_)) => self.state.into_iter().collect(),
            Some(Value::Tuple(items)) => items.clone(),
            _ => Vec::new(),
        };
        dicts.iter().find_map(|&d| match self.pk.get(d) {
            Value::Dict(kv) => kv
                .iter()
                .find(|(k, _)| matches!(self.pk.get(*k), Value::Str(s) if s == name))
                .map(|&(_, v)| v),
            _ => None,
        })
    }

    fn field(&self, name: &str) -> Result<usize, String> {
        self.opt_field(name)
            .ok_or_else(|| format!("`{}` without `{name}`", self.class))
    }
}

fn class_of(pk: &Pickle, id: usize) -> Result<&str, String> {
    Ok(Obj::any(pk, id)?.class)
}

fn dict(pk: &Pickle, id: usize) -> Result<&[(usize, usize)], String> {
    match pk.get(id) {
        Value::Dict(kv) => Ok(kv),
        Value::Object { class, state, .. } if class == "collections.OrderedDict" => match state {
            None => Ok(&[]),
            Some(s) => dict(pk, *s),
        },
        other => Err(format!("expected a dict, found {other:?}")),
    }
}

fn list(pk: &Pickle, id: usize) -> Result<&[usize], String> {
    match pk.get(id) {
        Value::List(items) | Value::Tuple(items) => Ok(items),
        other => Err(format!("expected a list, found {other:?}")),
    }
}

fn tuple(pk: &Pickle, id: usize) -> Result<&[usize], String> {
    list(pk, id)
}

fn string(pk: &Pickle, id: usize) -> Result<String, String> {
    match pk.get(id) {
        Value::Str(s) => Ok(s.clone()),
        other => Err(format!("expected a str, found {other:?}")),
    }
}

fn uint(pk: &Pickle, id: usize) -> Result<usize, String> {
    match pk.get(id) {
        Value::Int(i) => usize::try_from(*i).map_err(|_| format!("negative size {i}")),
        other => Err(format!("expected an int, found {other:?}")),
    }
}

fn ints(pk: &Pickle, id: usize) -> Result<Vec<usize>, String> {
    list(pk, id)?.iter().map(|&i| uint(pk, i)).collect()
}

/// A `torch.Size` (a call of `torch.Size` on a tuple of ints).
fn size(pk: &Pickle, id: usize) -> Result<Vec<usize>, String> {
    match pk.get(id) {
        Value::Object { class, args, .. } if class == "torch.Size" && args.len() == 1 => {
            ints(pk, args[0])
        }
        other => Err(format!("expected a torch.Size, found {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_leaving_the_folder() {
        assert!(safe_relative("__0_0.distcp").is_ok());
        for p in [
            "../x",
            "/etc/passwd",
            "a/../../b",
            "sub/x",
            "..",
            "a\\..\\b",
            "",
        ] {
            assert!(safe_relative(p).is_err(), "{p}");
        }
    }

    #[test]
    fn coverage_finds_missing_and_stray_chunks() {
        let c = |offsets: Vec<usize>, sizes: Vec<usize>| Chunk {
            offsets,
            sizes,
            file: 0,
            offset: 0,
            length: 0,
        };
        let whole = [c(vec![0, 0], vec![2, 4]), c(vec![2, 0], vec![2, 4])];
        assert!(check_cover("t", &[4, 4], &whole).is_ok());
        assert!(check_cover("t", &[4, 4], &whole[..1])
            .unwrap_err()
            .contains("missing"));
        assert!(check_cover("t", &[4, 4], &[c(vec![3, 0], vec![2, 4])])
            .unwrap_err()
            .contains("outside"));
    }

    #[test]
    fn scatter_places_strided_chunks() {
        // A [2, 3] chunk stored transposed (stride [1, 2]) at rows 1..3 of a [3, 3] tensor.
        let vals: Vec<u8> = vec![1, 4, 2, 5, 3, 6];
        let part = Part {
            storage: &vals,
            start: 0,
            size: vec![2, 3],
            stride: vec![1, 2],
            contiguous: false,
        };
        let chunk = Chunk {
            offsets: vec![1, 0],
            sizes: vec![2, 3],
            file: 0,
            offset: 0,
            length: 0,
        };
        let mut buf = vec![0u8; 9];
        scatter(&part, &chunk, &[3, 3], 1, &mut buf);
        assert_eq!(buf, [0, 0, 0, 1, 2, 3, 4, 5, 6]);
    }
}

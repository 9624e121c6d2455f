//! torch.distributed.checkpoint folders: the pickled `.metadata` index and the `__R_N.distcp`
//! files, in which every chunk is a standalone `torch.save` zip archive.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Cursor, Read};
use std::path::{Component, Path, PathBuf};

use candle_core::{DType, Device, Tensor, WithDType};
use memmap2::Mmap;
use zip::result::ZipError;

use super::pickle::{self, Pickle, PickleError, Value};
use crate::error::{input_error_from, InputError};

// The reasons below are part of each message rather than `source`s: `one_line` prints the
// whole chain, and would print them twice.

/// Why a DCP folder cannot be read, with the file (and tensor) it is about.
#[derive(Debug, thiserror::Error)]
pub enum DcpError {
    /// `.metadata` cannot be read.
    #[error("{}: cannot read: {error}", path.display())]
    ReadIndex {
        /// The `.metadata` file.
        path: PathBuf,
        /// What reading it gave.
        error: io::Error,
    },
    /// `.metadata` does not describe tensors filtermon can load.
    #[error("{}: {error}", path.display())]
    Index {
        /// The `.metadata` file.
        path: PathBuf,
        /// What is wrong in it.
        error: IndexError,
    },
    /// A data file the index names cannot be opened.
    #[error("{}: cannot open: {error}", path.display())]
    OpenData {
        /// The data file.
        path: PathBuf,
        /// What opening it gave.
        error: io::Error,
    },
    /// A data file the index names cannot be memory-mapped.
    #[error("{}: cannot map: {error}", path.display())]
    MapData {
        /// The data file.
        path: PathBuf,
        /// What mapping it gave.
        error: io::Error,
    },
    /// A chunk reaches past the end of its data file.
    #[error(
        "{}: truncated: a chunk of `{tensor}` needs bytes {start}..{end} but the file has {len}",
        path.display()
    )]
    DataTruncated {
        /// The data file.
        path: PathBuf,
        /// The tensor the chunk belongs to.
        tensor: String,
        /// The chunk's first byte in the file.
        start: usize,
        /// One past its last byte (saturated).
        end: usize,
        /// The file's length.
        len: usize,
    },
    /// A tensor the folder does not hold was asked for.
    #[error("{}: no tensor `{tensor}`", dir.display())]
    NoTensor {
        /// The DCP folder.
        dir: PathBuf,
        /// The name asked for, without the prefix.
        tensor: String,
    },
    /// The torch.save archive of one chunk is unusable.
    #[error("{}: chunk of `{tensor}` at byte {offset}: {error}", path.display())]
    Chunk {
        /// The data file holding the chunk.
        path: PathBuf,
        /// The tensor the chunk belongs to.
        tensor: String,
        /// The archive's first byte in the file.
        offset: usize,
        /// What is wrong with the archive (boxed: it is by far the largest reason, and every
        /// `Result` of this module would otherwise be sized for it).
        error: Box<ChunkError>,
    },
}

/// What is wrong in a `.metadata` index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// It is not a pickle this reader accepts.
    #[error(transparent)]
    Pickle(#[from] PickleError),
    /// It decodes, but not to torch's `Metadata`.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// An entry under the prefix holds bytes, not a tensor.
    #[error("`{tensor}` is not a tensor")]
    NotATensor {
        /// The entry's full name.
        tensor: String,
    },
    /// A tensor of a dtype candle has no counterpart for.
    #[error("`{tensor}` has a dtype filtermon cannot load")]
    Dtype {
        /// The tensor's full name.
        tensor: String,
    },
    /// A storage entry that is not a `_StorageInfo`.
    #[error("storage entry of class `{class}`")]
    StorageClass {
        /// The entry's class.
        class: String,
    },
    /// A tensor saved through transforms (such as compression), which this reader cannot undo.
    #[error("`{tensor}` is stored with transforms (not supported)")]
    Transforms {
        /// The tensor's full name.
        tensor: String,
    },
    /// A chunk of a tensor without a storage entry.
    #[error("no storage entry for a chunk of `{tensor}` at {offsets:?}")]
    NoStorageEntry {
        /// The tensor's full name.
        tensor: String,
        /// The chunk's offsets in the tensor.
        offsets: Vec<usize>,
    },
    /// A storage path that is not one plain file name inside the folder.
    #[error("storage path `{path}` leaves the checkpoint folder")]
    PathLeavesFolder {
        /// The `relative_path` as the index gives it.
        path: String,
    },
    /// A shape whose element count overflows.
    #[error("`{tensor}` has an impossible shape {shape:?}")]
    ImpossibleShape {
        /// The tensor's full name.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A chunk not inside its tensor's shape.
    #[error("a chunk of `{tensor}` ({sizes:?} at {offsets:?}) lies outside its shape {shape:?}")]
    ChunkOutside {
        /// The tensor's full name.
        tensor: String,
        /// The chunk's sizes.
        sizes: Vec<usize>,
        /// The chunk's offsets.
        offsets: Vec<usize>,
        /// The tensor's shape.
        shape: Vec<usize>,
    },
    /// Chunks that do not add up to the whole tensor.
    #[error(
        "the chunks of `{tensor}` hold {covered} of its {numel} elements (a chunk is missing)"
    )]
    ChunkMissing {
        /// The tensor's full name.
        tensor: String,
        /// Elements the chunks hold.
        covered: usize,
        /// Elements the shape holds.
        numel: usize,
    },
}

/// A decoded pickle not laid out the way torch writes it.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A plain value where an object should be.
    #[error("expected an object, found {found:?}")]
    ExpectedObject {
        /// The value found.
        found: Value,
    },
    /// An object of another class.
    #[error("expected a `{expected}`, found a `{found}`")]
    WrongClass {
        /// The class wanted.
        expected: String,
        /// The class found.
        found: String,
    },
    /// An object whose state lacks a field.
    #[error("`{class}` without `{field}`")]
    MissingField {
        /// The object's class.
        class: String,
        /// The field wanted.
        field: String,
    },
    /// Something else where a dict should be.
    #[error("expected a dict, found {found:?}")]
    ExpectedDict {
        /// The value found.
        found: Value,
    },
    /// Something else where a list or tuple should be.
    #[error("expected a list, found {found:?}")]
    ExpectedList {
        /// The value found.
        found: Value,
    },
    /// Something else where a str should be.
    #[error("expected a str, found {found:?}")]
    ExpectedStr {
        /// The value found.
        found: Value,
    },
    /// Something else where an int should be.
    #[error("expected an int, found {found:?}")]
    ExpectedInt {
        /// The value found.
        found: Value,
    },
    /// A negative size, offset or length.
    #[error("negative size {value}")]
    NegativeSize {
        /// The value found.
        value: i64,
    },
    /// Something else where a `torch.Size` should be.
    #[error("expected a torch.Size, found {found:?}")]
    ExpectedSize {
        /// The value found.
        found: Value,
    },
    /// A `TensorProperties` naming no dtype.
    #[error("TensorProperties without a dtype")]
    NoDtype,
}

/// What is wrong with the torch.save archive of one chunk.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The bytes are not a zip archive.
    #[error("not a torch.save archive: {error}")]
    NotAnArchive {
        /// What the zip reader said.
        error: ZipError,
    },
    /// A zip archive without the pickle torch.save writes.
    #[error("no data.pkl in the archive")]
    NoDataPkl,
    /// The `byteorder` record cannot be read.
    #[error("byteorder: {error}")]
    ByteOrderUnreadable {
        /// What reading it gave.
        error: io::Error,
    },
    /// A big-endian save.
    #[error("byte order `{order}` is not supported")]
    ByteOrder {
        /// The `byteorder` record.
        order: String,
    },
    /// `data.pkl` cannot be read.
    #[error("data.pkl: {error}")]
    DataPkl {
        /// What the zip reader said.
        error: ZipError,
    },
    /// `data.pkl` is not a pickle this reader accepts.
    #[error(transparent)]
    Pickle(#[from] PickleError),
    /// `data.pkl` decodes, but not to what torch writes for a tensor.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// `data.pkl` holds plain data, not a call.
    #[error("data.pkl does not hold a tensor")]
    NoCall,
    /// `data.pkl` holds a call of something other than `_rebuild_tensor_v2`.
    #[error("data.pkl holds a `{class}`, not a tensor")]
    NotATensor {
        /// The class called.
        class: String,
    },
    /// The tensor's storage is not a persistent id.
    #[error("tensor without a storage record")]
    NoStorageRecord,
    /// A persistent id not of the form `("storage", type, key, location, numel)`.
    #[error("malformed storage record")]
    MalformedStorageRecord,
    /// A storage record whose type is not a global.
    #[error("malformed storage type")]
    MalformedStorageType,
    /// A storage type candle has no dtype for.
    #[error("storage type `{class}` cannot be loaded")]
    StorageType {
        /// The storage class.
        class: String,
    },
    /// The archive's dtype differs from the index's.
    #[error("stored as {stored:?}, the index says {index:?}")]
    Dtype {
        /// The archive's dtype.
        stored: DType,
        /// The index's dtype.
        index: DType,
    },
    /// The archive's shape differs from the index's chunk sizes.
    #[error("has shape {stored:?}, the index says {index:?}")]
    Shape {
        /// The archive's shape.
        stored: Vec<usize>,
        /// The index's chunk sizes.
        index: Vec<usize>,
    },
    /// The storage record names no readable entry.
    #[error("storage {key}: {error}")]
    Storage {
        /// The storage key.
        key: String,
        /// What the zip reader said.
        error: ZipError,
    },
    /// A compressed storage entry, which cannot be read in place.
    #[error("compressed storage is not supported")]
    Compressed,
    /// The zip reader does not know where the storage starts.
    #[error("storage offset unknown")]
    StorageOffsetUnknown,
    /// A storage larger than the address space.
    #[error("storage too large")]
    StorageTooLarge,
    /// A storage shorter than its element count, or past the archive's end.
    #[error("storage is truncated")]
    StorageTruncated,
    /// `size` and `stride` of different lengths.
    #[error("size and stride differ in length")]
    StrideLength,
    /// A view with more elements than its storage (a stride-0 broadcast).
    #[error("view holds more elements than its storage")]
    ViewTooLarge,
    /// A view whose furthest element lies past its storage.
    #[error("view reaches past its storage")]
    ViewPastStorage,
}

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
    ///
    /// Every failure is the folder's fault, so the [`DcpError`] comes wrapped in an
    /// [`InputError`]: a `?` into `anyhow` keeps it an exit-2 error.
    pub fn open(dir: &Path, prefix: &str) -> Result<Self, InputError> {
        Self::read(dir, prefix).map_err(InputError::new)
    }

    fn read(dir: &Path, prefix: &str) -> Result<Self, DcpError> {
        let meta_path = dir.join(".metadata");
        let bad = |error: IndexError| DcpError::Index {
            path: meta_path.clone(),
            error,
        };
        let data = std::fs::read(&meta_path).map_err(|error| DcpError::ReadIndex {
            path: meta_path.clone(),
            error,
        })?;
        let pk = pickle::parse(&data, METADATA_CLASSES).map_err(|e| bad(e.into()))?;
        let index = Index::read(&pk, prefix).map_err(bad)?;
        let mut files: Vec<(PathBuf, Mmap)> = Vec::new();
        let mut file_ids: HashMap<String, usize> = HashMap::new();
        let mut tensors = HashMap::new();
        for (name, (dtype, shape, chunk_meta)) in index.tensors {
            let short = name.strip_prefix(prefix).unwrap_or(&name).to_owned();
            let mut chunks = Vec::with_capacity(chunk_meta.len());
            for (offsets, sizes) in chunk_meta {
                let Some(loc) = index.storage.get(&(name.clone(), offsets.clone())) else {
                    return Err(bad(IndexError::NoStorageEntry {
                        tensor: name,
                        offsets,
                    }));
                };
                let file = match file_ids.get(&loc.path) {
                    Some(&i) => i,
                    None => {
                        let path = dir.join(safe_relative(&loc.path).map_err(bad)?);
                        let f = match File::open(&path) {
                            Ok(f) => f,
                            Err(error) => return Err(DcpError::OpenData { path, error }),
                        };
                        // SAFETY: mapped read-only; checkpoint folders are complete (renamed from
                        // `stepN-tmp`) before filtermon reads them and are never written after.
                        let map = match unsafe { Mmap::map(&f) } {
                            Ok(map) => map,
                            Err(error) => return Err(DcpError::MapData { path, error }),
                        };
                        files.push((path, map));
                        file_ids.insert(loc.path.clone(), files.len() - 1);
                        files.len() - 1
                    }
                };
                let (path, map) = &files[file];
                let end = loc.offset.checked_add(loc.length);
                if end.is_none_or(|e| e > map.len()) {
                    return Err(DcpError::DataTruncated {
                        path: path.clone(),
                        tensor: name,
                        start: loc.offset,
                        end: loc.offset.saturating_add(loc.length),
                        len: map.len(),
                    });
                }
                chunks.push(Chunk {
                    offsets,
                    sizes,
                    file,
                    offset: loc.offset,
                    length: loc.length,
                });
            }
            check_cover(&name, &shape, &chunks).map_err(bad)?;
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

    /// The whole tensor `name` on the CPU in its saved dtype, reassembled from its chunks. A
    /// damaged folder is a [`DcpError`] inside an [`InputError`]; a failure of candle is not.
    pub fn load(&self, name: &str) -> anyhow::Result<Tensor> {
        let entry = self.tensors.get(name).ok_or_else(|| {
            input_error_from(DcpError::NoTensor {
                dir: self.dir.clone(),
                tensor: name.to_owned(),
            })
        })?;
        let es = entry.dtype.size_in_bytes();
        // `check_cover` bounded the product when the folder was opened.
        let numel: usize = entry.shape.iter().product();
        // Every chunk is decoded (and found to hold its elements) before the buffer is sized,
        // so a shape in the index cannot allocate more than the files hold.
        let parts = entry
            .chunks
            .iter()
            .map(|c| self.chunk(name, entry, c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(input_error_from)?;
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
    fn chunk<'a>(
        &'a self,
        name: &str,
        entry: &TensorEntry,
        c: &Chunk,
    ) -> Result<Part<'a>, DcpError> {
        let (path, map) = &self.files[c.file];
        let blob = &map[c.offset..c.offset + c.length];
        read_chunk(blob, entry, c).map_err(|error| DcpError::Chunk {
            path: path.clone(),
            tensor: name.to_owned(),
            offset: c.offset,
            error: Box::new(error),
        })
    }
}

/// Decodes the torch.save archive `blob` of chunk `c` and checks it against the index.
fn read_chunk<'a>(blob: &'a [u8], entry: &TensorEntry, c: &Chunk) -> Result<Part<'a>, ChunkError> {
    let mut zip = zip::ZipArchive::new(Cursor::new(blob))
        .map_err(|error| ChunkError::NotAnArchive { error })?;
    let pkl_name = zip
        .file_names()
        .filter_map(Result::ok)
        .find(|n| n.ends_with("/data.pkl"))
        .map(|n| n.into_owned())
        .ok_or(ChunkError::NoDataPkl)?;
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];
    if let Ok(mut f) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut order = String::new();
        f.read_to_string(&mut order)
            .map_err(|error| ChunkError::ByteOrderUnreadable { error })?;
        if order != "little" {
            return Err(ChunkError::ByteOrder { order });
        }
    }
    let mut pkl = Vec::new();
    zip.by_name(&pkl_name)
        .and_then(|mut f| Ok(f.read_to_end(&mut pkl)?))
        .map_err(|error| ChunkError::DataPkl { error })?;
    let pk = pickle::parse(&pkl, BLOB_CLASSES)?;
    let t = Rebuild::read(&pk)?;
    if t.dtype != entry.dtype {
        return Err(ChunkError::Dtype {
            stored: t.dtype,
            index: entry.dtype,
        });
    }
    if t.size != c.sizes {
        return Err(ChunkError::Shape {
            stored: t.size,
            index: c.sizes.clone(),
        });
    }
    let f = match zip.by_name(&format!("{prefix}data/{}", t.key)) {
        Ok(f) => f,
        Err(error) => return Err(ChunkError::Storage { key: t.key, error }),
    };
    if f.compression() != zip::CompressionMethod::Stored {
        return Err(ChunkError::Compressed);
    }
    let start = f
        .data_start()
        .and_then(|s| usize::try_from(s).ok())
        .ok_or(ChunkError::StorageOffsetUnknown)?;
    let len = usize::try_from(f.size()).map_err(|_| ChunkError::StorageTooLarge)?;
    let es = t.dtype.size_in_bytes();
    if start.checked_add(len).is_none_or(|e| e > blob.len())
        || t.numel.checked_mul(es).is_none_or(|n| len < n)
    {
        return Err(ChunkError::StorageTruncated);
    }
    let storage = &blob[start..start + len];
    if t.size.len() != t.stride.len() {
        return Err(ChunkError::StrideLength);
    }
    // `size` equals the index's chunk sizes, whose product `check_cover` bounded. A view
    // holding more elements than its storage has room for (stride-0 broadcasts) would make
    // `load` allocate for elements the file does not hold.
    let view_numel = t.size.iter().product::<usize>();
    if view_numel.checked_mul(es).is_none_or(|n| n > storage.len()) {
        return Err(ChunkError::ViewTooLarge);
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
        return Err(ChunkError::ViewPastStorage);
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
fn check_cover(name: &str, shape: &[usize], chunks: &[Chunk]) -> Result<(), IndexError> {
    let product = |dims: &[usize]| dims.iter().try_fold(1usize, |p, &n| p.checked_mul(n));
    let numel = product(shape).ok_or_else(|| IndexError::ImpossibleShape {
        tensor: name.to_owned(),
        shape: shape.to_vec(),
    })?;
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
            return Err(IndexError::ChunkOutside {
                tensor: name.to_owned(),
                sizes: c.sizes.clone(),
                offsets: c.offsets.clone(),
                shape: shape.to_vec(),
            });
        }
        // Inside the shape, so its product is at most `numel`.
        covered = covered.saturating_add(c.sizes.iter().product::<usize>());
    }
    if covered != numel {
        return Err(IndexError::ChunkMissing {
            tensor: name.to_owned(),
            covered,
            numel,
        });
    }
    Ok(())
}

/// A `relative_path` as a path inside the folder: one plain file name.
fn safe_relative(p: &str) -> Result<&Path, IndexError> {
    let path = Path::new(p);
    let mut comps = path.components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(_)), None) if !p.contains('\\') => Ok(path),
        _ => Err(IndexError::PathLeavesFolder { path: p.to_owned() }),
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
    fn read(pk: &Pickle, prefix: &str) -> Result<Self, IndexError> {
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
                return Err(IndexError::NotATensor { tensor: name });
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
                .collect::<Result<Vec<_>, LayoutError>>()?;
            let Some(dtype) = dtype else {
                return Err(IndexError::Dtype { tensor: name });
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
                return Err(IndexError::StorageClass {
                    class: info.class.to_owned(),
                });
            }
            if let Some(t) = info.opt_field("transform_descriptors") {
                if !matches!(pk.get(t), Value::None) && !list(pk, t)?.is_empty() {
                    return Err(IndexError::Transforms { tensor: fqn });
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
    fn read(pk: &Pickle) -> Result<Self, ChunkError> {
        let Value::Object { class, args, .. } = pk.get(pk.root) else {
            return Err(ChunkError::NoCall);
        };
        if class != "torch._utils._rebuild_tensor_v2" || args.len() < 4 {
            return Err(ChunkError::NotATensor {
                class: class.clone(),
            });
        }
        let Value::Persistent(pid) = pk.get(args[0]) else {
            return Err(ChunkError::NoStorageRecord);
        };
        let rec = tuple(pk, *pid)?;
        if rec.len() != 5 || string(pk, rec[0])? != "storage" {
            return Err(ChunkError::MalformedStorageRecord);
        }
        let Value::Global(storage_class) = pk.get(rec[1]) else {
            return Err(ChunkError::MalformedStorageType);
        };
        let dtype = storage_dtype(storage_class).ok_or_else(|| ChunkError::StorageType {
            class: storage_class.clone(),
        })?;
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
fn properties_dtype(pk: &Pickle, id: usize) -> Result<Option<DType>, LayoutError> {
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
        return Err(LayoutError::NoDtype);
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
    fn any(pk: &'a Pickle, id: usize) -> Result<Self, LayoutError> {
        match pk.get(id) {
            Value::Object { class, state, .. } => Ok(Self {
                pk,
                class,
                state: *state,
            }),
            other => Err(LayoutError::ExpectedObject {
                found: other.clone(),
            }),
        }
    }

    fn new(pk: &'a Pickle, id: usize, class: &str) -> Result<Self, LayoutError> {
        let o = Self::any(pk, id)?;
        if o.class != class {
            return Err(LayoutError::WrongClass {
                expected: class.to_owned(),
                found: o.class.to_owned(),
            });
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

    fn field(&self, name: &str) -> Result<usize, LayoutError> {
        self.opt_field(name)
            .ok_or_else(|| LayoutError::MissingField {
                class: self.class.to_owned(),
                field: name.to_owned(),
            })
    }
}

fn class_of(pk: &Pickle, id: usize) -> Result<&str, LayoutError> {
    Ok(Obj::any(pk, id)?.class)
}

fn dict(pk: &Pickle, id: usize) -> Result<&[(usize, usize)], LayoutError> {
    match pk.get(id) {
        Value::Dict(kv) => Ok(kv),
        Value::Object { class, state, .. } if class == "collections.OrderedDict" => match state {
            None => Ok(&[]),
            Some(s) => dict(pk, *s),
        },
        other => Err(LayoutError::ExpectedDict {
            found: other.clone(),
        }),
    }
}

fn list(pk: &Pickle, id: usize) -> Result<&[usize], LayoutError> {
    match pk.get(id) {
        Value::List(items) | Value::Tuple(items) => Ok(items),
        other => Err(LayoutError::ExpectedList {
            found: other.clone(),
        }),
    }
}

fn tuple(pk: &Pickle, id: usize) -> Result<&[usize], LayoutError> {
    list(pk, id)
}

fn string(pk: &Pickle, id: usize) -> Result<String, LayoutError> {
    match pk.get(id) {
        Value::Str(s) => Ok(s.clone()),
        other => Err(LayoutError::ExpectedStr {
            found: other.clone(),
        }),
    }
}

fn uint(pk: &Pickle, id: usize) -> Result<usize, LayoutError> {
    match pk.get(id) {
        Value::Int(i) => usize::try_from(*i).map_err(|_| LayoutError::NegativeSize { value: *i }),
        other => Err(LayoutError::ExpectedInt {
            found: other.clone(),
        }),
    }
}

fn ints(pk: &Pickle, id: usize) -> Result<Vec<usize>, LayoutError> {
    list(pk, id)?.iter().map(|&i| uint(pk, i)).collect()
}

/// A `torch.Size` (a call of `torch.Size` on a tuple of ints).
fn size(pk: &Pickle, id: usize) -> Result<Vec<usize>, LayoutError> {
    match pk.get(id) {
        Value::Object { class, args, .. } if class == "torch.Size" && args.len() == 1 => {
            ints(pk, args[0])
        }
        other => Err(LayoutError::ExpectedSize {
            found: other.clone(),
        }),
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
    fn a_missing_data_file_is_a_typed_input_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fixture = "tests/fixtures/olmo_core/transformer/step100/model_and_optim/.metadata";
        std::fs::copy(fixture, tmp.path().join(".metadata")).expect("copy index");
        let err = DcpFolder::open(tmp.path(), "model.")
            .err()
            .expect("no data files");
        match err.downcast_ref::<DcpError>() {
            Some(DcpError::OpenData { path, .. }) => assert!(path.starts_with(tmp.path())),
            other => panic!("{other:?}"),
        }
        let line = crate::error::one_line(&err.into());
        assert_eq!(line.matches("cannot open").count(), 1, "{line}");
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
            .to_string()
            .contains("missing"));
        assert!(check_cover("t", &[4, 4], &[c(vec![3, 0], vec![2, 4])])
            .unwrap_err()
            .to_string()
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

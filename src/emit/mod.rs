//! Writing ONNX models: streamed encoding, optional external data, atomic replace.

pub mod atomic;

use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use prost::Message;

use crate::error::{Error, Result};
use crate::load::proto::{
    tensor_proto, GraphProto, ModelProto, StringStringEntryProto, TensorProto,
};

/// Where initializer bytes go when writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExternalData {
    /// Inline, unless the model would cross protobuf's 2 GiB message limit.
    #[default]
    Auto,
    /// Every tensor of at least `MIN_EXTERNAL_BYTES` goes to `<model file>.data`.
    Always,
    Never,
}

/// Small tensors stay inline even in external mode: side files full of 8-byte shape constants
/// only cost seeks.
pub const MIN_EXTERNAL_BYTES: usize = 1024;
/// protobuf refuses messages of 2 GiB or more.
const PROTOBUF_LIMIT: u64 = (1u64 << 31) - 1;
/// Tensors in the side file start at this alignment so a consumer may map them directly.
const EXTERNAL_ALIGN: u64 = 64;

/// `model` encoded in memory (for a runtime to load, or a caller that wants the bytes).
pub fn encode(model: &ModelProto) -> crate::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    write_model(model, &mut bytes).map_err(|cause| crate::Error::Write {
        path: "<memory>".into(),
        cause,
    })?;
    Ok(bytes)
}

/// Encodes `model` exactly as `model.encode_to_vec()` would, but tensor by tensor, so memory
/// use stays at one tensor rather than the whole model.
pub fn write_model<W: Write + ?Sized>(model: &ModelProto, out: &mut W) -> std::io::Result<()> {
    let mut buf = Vec::new();
    // Fields are written in tag order, as prost does; graph is tag 7.
    let head = ModelProto {
        ir_version: model.ir_version,
        producer_name: model.producer_name.clone(),
        producer_version: model.producer_version.clone(),
        domain: model.domain.clone(),
        model_version: model.model_version,
        doc_string: model.doc_string.clone(),
        ..Default::default()
    };
    head.encode(&mut buf).expect("Vec grows");
    out.write_all(&buf)?;
    if let Some(g) = &model.graph {
        buf.clear();
        prost::encoding::encode_key(7, prost::encoding::WireType::LengthDelimited, &mut buf);
        prost::encoding::encode_varint(g.encoded_len() as u64, &mut buf);
        out.write_all(&buf)?;
        write_graph(g, out)?;
    }
    let tail = ModelProto {
        opset_import: model.opset_import.clone(),
        metadata_props: model.metadata_props.clone(),
        training_info: model.training_info.clone(),
        functions: model.functions.clone(),
        configuration: model.configuration.clone(),
        ..Default::default()
    };
    buf.clear();
    tail.encode(&mut buf).expect("Vec grows");
    out.write_all(&buf)
}

fn write_graph<W: Write + ?Sized>(g: &GraphProto, out: &mut W) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1 << 16);
    let flush = |buf: &mut Vec<u8>, out: &mut W| -> std::io::Result<()> {
        out.write_all(buf)?;
        buf.clear();
        Ok(())
    };
    for n in &g.node {
        prost::encoding::message::encode(1, n, &mut buf);
        if buf.len() > (1 << 16) {
            flush(&mut buf, out)?;
        }
    }
    if let Some(name) = &g.name {
        prost::encoding::string::encode(2, name, &mut buf);
    }
    flush(&mut buf, out)?;
    for t in &g.initializer {
        write_tensor_field(5, t, out, &mut buf)?;
    }
    let tail = GraphProto {
        doc_string: g.doc_string.clone(),
        input: g.input.clone(),
        output: g.output.clone(),
        value_info: g.value_info.clone(),
        quantization_annotation: g.quantization_annotation.clone(),
        sparse_initializer: g.sparse_initializer.clone(),
        metadata_props: g.metadata_props.clone(),
        ..Default::default()
    };
    tail.encode(&mut buf).expect("Vec grows");
    flush(&mut buf, out)
}

/// Writes one tensor field; large `raw_data` goes straight from its (mapped) buffer to the
/// writer instead of through an encode buffer.
fn write_tensor_field<W: Write + ?Sized>(
    tag: u32,
    t: &TensorProto,
    out: &mut W,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    buf.clear();
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(t.encoded_len() as u64, buf);
    match &t.raw_data {
        Some(raw) if raw.len() > (1 << 16) => {
            // raw_data is tag 9: fields 1..8 before it, 10.. after it.
            let before = TensorProto {
                dims: t.dims.clone(),
                data_type: t.data_type,
                segment: t.segment.clone(),
                float_data: t.float_data.clone(),
                int32_data: t.int32_data.clone(),
                string_data: t.string_data.clone(),
                int64_data: t.int64_data.clone(),
                name: t.name.clone(),
                ..Default::default()
            };
            before.encode(buf).expect("Vec grows");
            prost::encoding::encode_key(9, prost::encoding::WireType::LengthDelimited, buf);
            prost::encoding::encode_varint(raw.len() as u64, buf);
            out.write_all(buf)?;
            out.write_all(raw)?;
            buf.clear();
            let after = TensorProto {
                double_data: t.double_data.clone(),
                uint64_data: t.uint64_data.clone(),
                doc_string: t.doc_string.clone(),
                external_data: t.external_data.clone(),
                data_location: t.data_location,
                metadata_props: t.metadata_props.clone(),
                ..Default::default()
            };
            after.encode(buf).expect("Vec grows");
        }
        _ => t.encode(buf).expect("Vec grows"),
    }
    out.write_all(buf)?;
    buf.clear();
    Ok(())
}

/// A model written to a hidden folder beside its destination, published by [`Staged::commit`]
/// (a rename per file, on the same filesystem) or discarded when dropped: a caller can check
/// the written files, and drop the model from memory meanwhile, before anything appears at the
/// destination.
pub struct Staged {
    dir: tempfile::TempDir,
    file_name: std::ffi::OsString,
    dest: std::path::PathBuf,
}

/// [`save`] into a [`Staged`] folder beside `path`.
pub fn stage(model: &ModelProto, path: &Path, mode: ExternalData) -> Result<Staged> {
    let werr = |cause| Error::Write {
        path: path.to_path_buf(),
        cause,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("output path {} has no file name", path.display())))?
        .to_os_string();
    let parent = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(werr)?;
    let dir = tempfile::Builder::new()
        .prefix(".detrc-stage.")
        .tempdir_in(parent)
        .map_err(werr)?;
    save(model, &dir.path().join(&file_name), mode)?;
    Ok(Staged {
        dir,
        file_name,
        dest: path.to_path_buf(),
    })
}

impl Staged {
    /// The staged model file.
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join(&self.file_name)
    }

    /// Moves the staged files to the destination: the external data first, so the model never
    /// names data that is not there yet.
    pub fn commit(self) -> Result<()> {
        let data_name = {
            let mut n = self.file_name.clone();
            n.push(".data");
            n
        };
        let data = self.dir.path().join(&data_name);
        if data.exists() {
            let to = self.dest.with_file_name(&data_name);
            std::fs::rename(&data, &to).map_err(|cause| Error::Write { path: to, cause })?;
        }
        std::fs::rename(self.path(), &self.dest).map_err(|cause| Error::Write {
            path: self.dest.clone(),
            cause,
        })
    }
}

/// Saves `model` to `path` atomically. With external data, tensors move into
/// `<file name>.data` beside it; both files appear only once complete.
pub fn save(model: &ModelProto, path: &Path, mode: ExternalData) -> Result<()> {
    save_with_limit(model, path, mode, PROTOBUF_LIMIT)
}

/// `save` with the size at which `Auto` switches to external data made explicit (tests use a
/// small one instead of writing 2 GiB).
pub fn save_with_limit(
    model: &ModelProto,
    path: &Path,
    mode: ExternalData,
    limit: u64,
) -> Result<()> {
    let raw_total: u64 = model
        .graph
        .as_ref()
        .map(|g| {
            g.initializer
                .iter()
                .map(|t| t.raw_data.as_ref().map_or(0, |r| r.len() as u64))
                .sum()
        })
        .unwrap_or(0);
    let external = match mode {
        ExternalData::Always => true,
        ExternalData::Never => false,
        ExternalData::Auto => raw_total + (1 << 20) >= limit,
    };
    if !external {
        if model.encoded_len() as u64 > PROTOBUF_LIMIT {
            return Err(Error::Unsupported(format!(
                "the model is {} bytes, over protobuf's 2 GiB limit; write it with external data",
                model.encoded_len()
            )));
        }
        return atomic::write(path, |w| write_model(model, w));
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("output path {} has no file name", path.display())))?
        .to_string_lossy()
        .into_owned();
    let data_name = format!("{file_name}.data");
    let data_path = path.with_file_name(&data_name);
    let mut model = model.clone();
    let mut moved: Vec<Bytes> = Vec::new();
    if let Some(g) = model.graph.as_mut() {
        let mut offset = 0u64;
        for t in g.initializer.iter_mut() {
            let Some(raw) = t.raw_data.take_if(|r| r.len() >= MIN_EXTERNAL_BYTES) else {
                continue;
            };
            offset = offset.div_ceil(EXTERNAL_ALIGN) * EXTERNAL_ALIGN;
            let entry = |k: &str, v: String| StringStringEntryProto {
                key: Some(k.into()),
                value: Some(v),
            };
            t.external_data = vec![
                entry("location", data_name.clone()),
                entry("offset", offset.to_string()),
                entry("length", raw.len().to_string()),
            ];
            t.data_location = Some(tensor_proto::DATA_LOCATION_EXTERNAL);
            offset += raw.len() as u64;
            moved.push(raw);
        }
    }
    atomic::write(&data_path, |w| {
        let mut pos = 0u64;
        let pad = [0u8; EXTERNAL_ALIGN as usize];
        for raw in &moved {
            let aligned = pos.div_ceil(EXTERNAL_ALIGN) * EXTERNAL_ALIGN;
            w.write_all(&pad[..(aligned - pos) as usize])?;
            w.write_all(raw)?;
            pos = aligned + raw.len() as u64;
        }
        Ok(())
    })?;
    atomic::write(path, |w| write_model(&model, w))
}

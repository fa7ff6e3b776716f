//! The Produce frames of `records.py` (`read_produce_request`, `produce_request_parts`, `produce_response_frame`,
//! `read_produce_response`), compiled for the frames the produce path sees every request. Each is a fast path
//! only: on anything it does not take, it returns None and records.py runs its Python code on the same arguments,
//! which then reads, writes or refuses it (with the same MalformedFrame message as ever). What it does return
//! equals what the Python code returns (tests/protocol/test_produce_frames_twins.py).
//!
//! The readers leave to Python: a malformed frame (any error), a non-empty tagged-fields section, a string that
//! is not UTF-8, a frame that is not a one-dimensional buffer of bytes, a request of more topics and partitions
//! than its `max_elements` (records.py's walk refuses it, with its message), and (responses) record errors in a
//! flexible answer. The writers leave to Python: a version outside 3..12, a value that does not fit its field,
//! a string that cannot be encoded, a records buffer that is not bytes, a topic, partition or record error that
//! is not a tuple or list of two.

use pyo3::buffer::PyBuffer;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyMemoryView, PySlice, PyString, PyTuple};

const FIRST_FLEXIBLE: i16 = 9;

/// A one-dimensional buffer of bytes ("B"), contiguous, or None.
pub(crate) fn byte_buffer(obj: &Bound<'_, PyAny>) -> Option<PyBuffer<u8>> {
    let buffer = PyBuffer::<u8>::get(obj).ok()?;
    let format_ok = buffer.format().to_bytes() == b"B";
    (format_ok && buffer.dimensions() == 1 && buffer.is_c_contiguous()).then_some(buffer)
}

pub(crate) fn bytes_of(buffer: &PyBuffer<u8>) -> &[u8] {
    let len = buffer.len_bytes();
    if len == 0 {
        return &[];
    }
    // Safety: a contiguous buffer of `len` bytes its exporter keeps alive while `buffer` is held; the GIL is held
    // for the whole call, so no Python code can resize or write it meanwhile.
    unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, len) }
}

/// Reads big-endian fields and Kafka's varints at a position; None past the end (records.py's "truncated").
pub(crate) struct Reader<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn left(&self) -> i64 {
        self.b.len() as i64 - self.pos as i64
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let stop = self.pos.checked_add(n).filter(|&s| s <= self.b.len())?;
        let out = &self.b[self.pos..stop];
        self.pos = stop;
        Some(out)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    pub(crate) fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    pub(crate) fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    pub(crate) fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    /// records.py's `_uvarint`: at most 5 bytes, the fifth's 7 bits shifted by 28.
    pub(crate) fn uvarint(&mut self) -> Option<i64> {
        let mut value: i64 = 0;
        for shift in [0, 7, 14, 21] {
            let byte = self.u8()?;
            value |= ((byte & 0x7F) as i64) << shift;
            if byte < 0x80 {
                return Some(value);
            }
        }
        let byte = self.u8()?;
        (byte < 0x80).then_some(value | (byte as i64) << 28)
    }
    /// An empty tagged-fields section; None for any other (records.py walks those).
    pub(crate) fn no_tags(&mut self) -> Option<()> {
        (self.u8()? == 0).then_some(())
    }
    pub(crate) fn utf8(&mut self, length: i64) -> Option<&'a str> {
        if length > self.left() {
            return None;
        }
        std::str::from_utf8(self.take(length as usize)?).ok()
    }
    /// A NULLABLE_STRING (int16 length): Some(None) for null.
    pub(crate) fn legacy_string(&mut self) -> Option<Option<&'a str>> {
        match self.i16()? {
            -1 => Some(None),
            n if n < 0 => None,
            n => Some(Some(self.utf8(n as i64)?)),
        }
    }
    /// A COMPACT_NULLABLE_STRING: Some(None) for null.
    pub(crate) fn compact_string(&mut self) -> Option<Option<&'a str>> {
        match self.uvarint()? {
            0 => Some(None),
            n => Some(Some(self.utf8(n - 1)?)),
        }
    }
    /// An array count that the bytes left can hold at `min_size` each (records.py's `_bad_count` otherwise).
    pub(crate) fn count(&mut self, flexible: bool, min_size: i64) -> Option<usize> {
        let count = if flexible { self.uvarint()? - 1 } else { self.i32()? as i64 };
        (count >= 0 && count * min_size <= self.left()).then_some(count as usize)
    }
}

/// tuple.__new__: makes a NamedTuple as its generated __new__ does (`tuple_new(cls, fields)`), without its frame.
pub(crate) fn tuple_new(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.get_type::<PyTuple>().getattr(intern!(py, "__new__"))
}

pub(crate) type RequestHead<'a> = (i16, i32, Option<&'a str>, Option<&'a str>, i16, i32);

/// The topics, partitions and tagged fields a request walk may still cross: records.py's `_Elements`, which
/// spends each array's count once it has been checked against the bytes left and refuses once fewer than none
/// are left. Only empty tagged-fields sections are read here (any other is left to Python), so they spend 0.
pub(crate) struct Elements {
    pub(crate) left: i64,
}

impl Elements {
    /// None: past the limit (records.py's walk then raises its MalformedFrame, with its message).
    pub(crate) fn spend(&mut self, count: usize) -> Option<()> {
        self.left = self.left.checked_sub(i64::try_from(count).ok()?)?;
        (self.left >= 0).then_some(())
    }
}

/// `records.read_produce_request`, or None (see the module's doc). `max_elements` as records.py's: None for any
/// number, else at most that many topics and partitions together (a request with more is left to Python, which
/// refuses it); an int that does not fit an int64 is left to Python too.
#[pyfunction]
#[pyo3(signature = (frame, frame_cls, frame_names, topic_cls, partition_cls, max_elements = None))]
pub fn read_produce_request<'py>(
    frame: &Bound<'py, PyAny>,
    frame_cls: &Bound<'py, PyAny>,
    frame_names: &Bound<'py, PyAny>,
    topic_cls: &Bound<'py, PyAny>,
    partition_cls: &Bound<'py, PyAny>,
    max_elements: Option<&Bound<'py, PyAny>>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let left = match max_elements.filter(|m| !m.is_none()) {
        None => i64::MAX,
        Some(m) => match m.extract::<i64>() {
            Ok(left) => left,
            Err(_) => return Ok(None),
        },
    };
    let mut elements = Elements { left };
    let Some(buffer) = byte_buffer(frame) else { return Ok(None) };
    let view = PyMemoryView::from(frame)?;
    let mut r = Reader { b: bytes_of(&buffer), pos: 0 };
    let Some((head, flexible)) = request_head(&mut r) else { return Ok(None) };
    let py = frame.py();
    let Some(topics) = request_topics(py, &mut r, flexible, &view, topic_cls, partition_cls, &mut elements)? else {
        return Ok(None);
    };
    let (version, correlation_id, client_id, transactional_id, acks, timeout_ms) = head;
    let fields = (version, correlation_id, client_id, transactional_id, acks, timeout_ms, topics).into_pyobject(py)?;
    Ok(Some(crate::instance(frame_cls, frame_names, fields)?))
}

pub(crate) fn request_head<'a>(r: &mut Reader<'a>) -> Option<(RequestHead<'a>, bool)> {
    let (api_key, version, correlation_id) = (r.i16()?, r.i16()?, r.i32()?);
    if api_key != 0 || !(3..=12).contains(&version) {
        return None;
    }
    let client_id = r.legacy_string()?;
    let flexible = version >= FIRST_FLEXIBLE;
    let transactional_id = if flexible {
        r.no_tags()?; // the header's
        r.compact_string()?
    } else {
        r.legacy_string()?
    };
    let (acks, timeout_ms) = (r.i16()?, r.i32()?);
    Some(((version, correlation_id, client_id, transactional_id, acks, timeout_ms), flexible))
}

fn request_topics<'py>(
    py: Python<'py>,
    r: &mut Reader<'_>,
    flexible: bool,
    view: &Bound<'py, PyMemoryView>,
    topic_cls: &Bound<'py, PyAny>,
    partition_cls: &Bound<'py, PyAny>,
    elements: &mut Elements,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Some(count) = r.count(flexible, if flexible { 3 } else { 6 }) else { return Ok(None) };
    if elements.spend(count).is_none() {
        return Ok(None);
    }
    let new = tuple_new(py)?;
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let name = if flexible { r.compact_string() } else { r.legacy_string() };
        let (Some(Some(name)), Some(partitions)) = (name, r.count(flexible, if flexible { 6 } else { 8 })) else {
            return Ok(None);
        };
        if elements.spend(partitions).is_none() {
            return Ok(None);
        }
        let mut parts = Vec::with_capacity(partitions);
        for _ in 0..partitions {
            let Some((index, span)) = partition(r, flexible) else { return Ok(None) };
            let records = match span {
                None => py.None().into_bound(py),
                Some((start, stop)) => view.get_item(PySlice::new(py, start as isize, stop as isize, 1))?,
            };
            let fields = PyTuple::new(py, [index.into_pyobject(py)?.into_any(), records])?;
            parts.push(new.call1((partition_cls, fields))?);
        }
        if flexible && r.no_tags().is_none() {
            return Ok(None);
        }
        let fields = PyTuple::new(py, [PyString::new(py, name).into_any(), PyTuple::new(py, parts)?.into_any()])?;
        topics.push(new.call1((topic_cls, fields))?);
    }
    if flexible && r.no_tags().is_none() {
        return Ok(None);
    }
    Ok(Some(PyTuple::new(py, topics)?))
}

/// A partition's index and where its records are in the frame (None: null records).
pub(crate) fn partition(r: &mut Reader<'_>, flexible: bool) -> Option<(i32, Option<(usize, usize)>)> {
    let index = r.i32()?;
    let length = if flexible { r.uvarint()? - 1 } else { r.i32()? as i64 };
    let span = if length < 0 {
        if length != -1 {
            return None;
        }
        None
    } else {
        let start = r.pos;
        r.take(if length > r.left() { return None } else { length as usize })?;
        Some((start, r.pos))
    };
    if flexible {
        r.no_tags()?;
    }
    Some((index, span))
}

/// Buffers of a size-prefixed frame for `writelines`: small fields gathered, each large buffer by reference.
struct Parts<'py> {
    done: Vec<Bound<'py, PyAny>>,
    small: Vec<u8>,
    size: usize,
}

impl<'py> Parts<'py> {
    fn flush(&mut self, py: Python<'py>) {
        self.size += self.small.len();
        self.done.push(PyByteArray::new(py, &self.small).into_any());
        self.small.clear();
    }
}

fn string_bytes(out: &mut Vec<u8>, value: Option<&Bound<'_, PyAny>>, flexible: bool) -> Option<()> {
    let Some(value) = value else {
        out.extend_from_slice(if flexible { b"\x00" } else { b"\xff\xff" });
        return Some(());
    };
    let data = value.cast::<PyString>().ok()?.to_str().ok()?.as_bytes();
    if flexible {
        varint(out, data.len() as u64 + 1);
    } else {
        out.extend_from_slice(&i16::try_from(data.len()).ok()?.to_be_bytes());
    }
    out.extend_from_slice(data);
    Some(())
}

pub(crate) fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value & 0x7F) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn count(out: &mut Vec<u8>, n: usize, flexible: bool) -> Option<()> {
    if flexible {
        varint(out, n as u64 + 1);
    } else {
        out.extend_from_slice(&i32::try_from(n).ok()?.to_be_bytes());
    }
    Some(())
}

/// An int argument that fits `T`, or None (records.py then raises what struct or its own check raises).
fn int<'py, T: for<'a> FromPyObject<'a, 'py>>(obj: &Bound<'py, PyAny>) -> Option<T> {
    obj.extract::<T>().ok()
}

fn optional<'a, 'py>(obj: &'a Bound<'py, PyAny>) -> Option<&'a Bound<'py, PyAny>> {
    (!obj.is_none()).then_some(obj)
}

/// A (name, items) or (index, records) pair: a tuple (named or not) or a list of two.
pub(crate) fn pair<'py>(obj: &Bound<'py, PyAny>) -> Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    if let Ok(t) = obj.cast::<PyTuple>() {
        return (t.len() == 2).then(|| Some((t.get_item(0).ok()?, t.get_item(1).ok()?)))?;
    }
    let l = obj.cast::<PyList>().ok()?;
    (l.len() == 2).then(|| Some((l.get_item(0).ok()?, l.get_item(1).ok()?)))?
}

/// `records.produce_request_parts`, or None (see the module's doc).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn produce_request_parts<'py>(
    py: Python<'py>,
    version: &Bound<'py, PyAny>,
    correlation_id: &Bound<'py, PyAny>,
    client_id: &Bound<'py, PyAny>,
    acks: &Bound<'py, PyAny>,
    timeout_ms: &Bound<'py, PyAny>,
    topics: &Bound<'py, PyAny>,
    by_reference: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let ints = (|| Some((int::<i16>(version)?, int::<i32>(correlation_id)?, int::<i16>(acks)?, int::<i32>(timeout_ms)?,
                         int::<i64>(by_reference)?)))();
    let Some((version, correlation_id, acks, timeout_ms, by_reference)) = ints else { return Ok(None) };
    if !(3..=12).contains(&version) {
        return Ok(None);
    }
    let flexible = version >= FIRST_FLEXIBLE;
    let mut out = Parts { done: Vec::new(), small: Vec::with_capacity(256), size: 0 };
    out.small.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // size (below), api_key
    out.small.extend_from_slice(&version.to_be_bytes());
    out.small.extend_from_slice(&correlation_id.to_be_bytes());
    if string_bytes(&mut out.small, optional(client_id), false).is_none() {
        return Ok(None);
    }
    out.small.extend_from_slice(if flexible { b"\x00\x00" } else { b"\xff\xff" }); // (header tags,) transactional_id
    out.small.extend_from_slice(&acks.to_be_bytes());
    out.small.extend_from_slice(&timeout_ms.to_be_bytes());
    if request_body(py, &mut out, topics, flexible, by_reference).is_none() {
        return Ok(None);
    }
    if !out.small.is_empty() || out.done.is_empty() {
        out.flush(py);
    }
    let head = out.done[0].cast::<PyByteArray>().map_err(PyErr::from)?;
    // Safety: a bytearray made above, of at least 4 bytes, not shared with any Python code yet.
    unsafe { head.as_bytes_mut()[..4].copy_from_slice(&(out.size as i32 - 4).to_be_bytes()) };
    Ok(Some(PyList::new(py, out.done)?))
}

/// A partition's record set as the buffers it is written from: none for None, itself for a buffer of bytes, the
/// pieces of a `records.RecordParts` (a batch whose rewritten head is a buffer of its own, its body the client's);
/// None for anything else (records.py writes it, or refuses it).
fn record_pieces<'py>(py: Python<'py>, records: &Bound<'py, PyAny>) -> Option<Vec<(Bound<'py, PyAny>, PyBuffer<u8>)>> {
    if records.is_none() {
        return Some(Vec::new());
    }
    if let Some(buffer) = byte_buffer(records) {
        return Some(vec![(records.clone(), buffer)]);
    }
    let parts = records.getattr(intern!(py, "parts")).ok()?;
    let parts = parts.cast::<PyList>().ok()?;
    let mut pieces = Vec::with_capacity(parts.len());
    for piece in parts.iter() {
        let buffer = byte_buffer(&piece)?;
        pieces.push((piece, buffer));
    }
    Some(pieces)
}

fn request_body<'py>(
    py: Python<'py>,
    out: &mut Parts<'py>,
    topics: &Bound<'py, PyAny>,
    flexible: bool,
    by_reference: i64,
) -> Option<()> {
    count(&mut out.small, topics.len().ok()?, flexible)?;
    for topic in topics.try_iter().ok()? {
        let (name, partitions) = pair(&topic.ok()?)?;
        string_bytes(&mut out.small, Some(&name), flexible)?;
        count(&mut out.small, partitions.len().ok()?, flexible)?;
        for p in partitions.try_iter().ok()? {
            let (index, records) = pair(&p.ok()?)?;
            out.small.extend_from_slice(&index.extract::<i32>().ok()?.to_be_bytes());
            let pieces = record_pieces(py, &records)?;
            let length = pieces.iter().map(|(_, b)| b.len_bytes() as i64).sum::<i64>();
            let length = if records.is_none() { -1 } else { length };
            if flexible {
                varint(&mut out.small, (length + 1) as u64);
            } else {
                out.small.extend_from_slice(&i32::try_from(length).ok()?.to_be_bytes());
            }
            for (piece, buffer) in pieces {
                let size = buffer.len_bytes() as i64;
                if size == 0 {
                    continue;
                }
                if size >= by_reference {
                    out.flush(py);
                    out.size += size as usize;
                    out.done.push(piece);
                } else {
                    out.small.extend_from_slice(bytes_of(&buffer));
                }
            }
            if flexible {
                out.small.push(0);
            }
        }
        if flexible {
            out.small.push(0);
        }
    }
    if flexible {
        out.small.push(0);
    }
    Some(())
}

/// `records.produce_response_frame`, or None (see the module's doc).
#[pyfunction]
pub fn produce_response_frame<'py>(
    py: Python<'py>,
    version: &Bound<'py, PyAny>,
    correlation_id: &Bound<'py, PyAny>,
    topics: &Bound<'py, PyAny>,
    throttle_time_ms: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let ints = (|| Some((int::<i16>(version)?, int::<i32>(correlation_id)?, int::<i32>(throttle_time_ms)?)))();
    let Some((version, correlation_id, throttle_time_ms)) = ints else { return Ok(None) };
    if !(3..=12).contains(&version) {
        return Ok(None);
    }
    let flexible = version >= FIRST_FLEXIBLE;
    let out = response_frame(correlation_id, throttle_time_ms, flexible, |out| {
        response_body(py, out, topics, version, flexible)
    });
    Ok(out.map(|out| PyBytes::new(py, &out)))
}

/// A ProduceResponse frame: its size, the correlation id, (the header's tags,) the topics `body` writes, the
/// throttle_time_ms (and the body's tags); None when `body` gives None. Both writers' frame.
fn response_frame(
    correlation_id: i32,
    throttle_time_ms: i32,
    flexible: bool,
    body: impl FnOnce(&mut Vec<u8>) -> Option<()>,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&correlation_id.to_be_bytes());
    if flexible {
        out.push(0);
    }
    body(&mut out)?;
    out.extend_from_slice(&throttle_time_ms.to_be_bytes());
    if flexible {
        out.push(0);
    }
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Some(out)
}

fn response_body(py: Python<'_>, out: &mut Vec<u8>, topics: &Bound<'_, PyAny>, version: i16, flexible: bool) -> Option<()> {
    count(out, topics.len().ok()?, flexible)?;
    for topic in topics.try_iter().ok()? {
        let (name, answers) = pair(&topic.ok()?)?;
        string_bytes(out, Some(&name), flexible)?;
        count(out, answers.len().ok()?, flexible)?;
        for a in answers.try_iter().ok()? {
            answer(py, out, &a.ok()?, version, flexible)?;
        }
        if flexible {
            out.push(0);
        }
    }
    Some(())
}

fn field<'py>(a: &Bound<'py, PyAny>, name: &Bound<'py, PyString>) -> Option<Bound<'py, PyAny>> {
    a.getattr(name).ok()
}

/// A `records.ProducePartitionAnswer` (or any object of its fields) written: only the fields its version has are
/// read.
fn answer(py: Python<'_>, out: &mut Vec<u8>, a: &Bound<'_, PyAny>, version: i16, flexible: bool) -> Option<()> {
    let head = (
        field(a, intern!(py, "index"))?.extract::<i32>().ok()?,
        field(a, intern!(py, "error_code"))?.extract::<i16>().ok()?,
        field(a, intern!(py, "base_offset"))?.extract::<i64>().ok()?,
        field(a, intern!(py, "log_append_time_ms"))?.extract::<i64>().ok()?,
        if version >= 5 { field(a, intern!(py, "log_start_offset"))?.extract::<i64>().ok()? } else { -1 },
    );
    let tail = if version >= 8 {
        Some((field(a, intern!(py, "record_errors"))?, field(a, intern!(py, "error_message"))?))
    } else {
        None
    };
    answer_bytes(out, head, tail.as_ref().map(|(errors, message)| (errors, optional(message))), version, flexible)
}

/// A partition answer's index, error code, base offset, log append time and log start offset.
type AnswerHead = (i32, i16, i64, i64, i64);

/// A partition answer: `head` (its log start offset from version 5), then (`tail`, given from version 8) its
/// record errors, (batch_index, message) pairs in a tuple or list (anything else, None included, is Python's to
/// take or refuse), and its error message, then (flexible) its tags. Both writers' partition answer.
fn answer_bytes(
    out: &mut Vec<u8>,
    head: AnswerHead,
    tail: Option<(&Bound<'_, PyAny>, Option<&Bound<'_, PyAny>>)>,
    version: i16,
    flexible: bool,
) -> Option<()> {
    let (index, code, base, append, start) = head;
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&base.to_be_bytes());
    out.extend_from_slice(&append.to_be_bytes());
    if version >= 5 {
        out.extend_from_slice(&start.to_be_bytes());
    }
    if let Some((errors, message)) = tail {
        if !(errors.is_instance_of::<PyTuple>() || errors.is_instance_of::<PyList>()) {
            return None;
        }
        count(out, errors.len().ok()?, flexible)?;
        for e in errors.try_iter().ok()? {
            let (batch_index, text) = pair(&e.ok()?)?;
            out.extend_from_slice(&batch_index.extract::<i32>().ok()?.to_be_bytes());
            string_bytes(out, optional(&text), flexible)?;
            if flexible {
                out.push(0);
            }
        }
        string_bytes(out, message, flexible)?;
    }
    if flexible {
        out.push(0);
    }
    Some(())
}

/// `records.read_produce_response`, or None (see the module's doc).
#[pyfunction]
pub fn read_produce_response<'py>(
    frame: &Bound<'py, PyAny>,
    version: &Bound<'py, PyAny>,
    answer_cls: &Bound<'py, PyAny>,
    answer_names: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    Ok(read_answer(frame, version, answer_cls, answer_names)?.map(|(topics, _)| topics))
}

/// `records.read_produce_answer`: what `read_produce_response` reads and the answer's throttle_time_ms, or None.
#[pyfunction]
pub fn read_produce_answer<'py>(
    frame: &Bound<'py, PyAny>,
    version: &Bound<'py, PyAny>,
    answer_cls: &Bound<'py, PyAny>,
    answer_names: &Bound<'py, PyAny>,
) -> PyResult<Option<(Bound<'py, PyTuple>, i32)>> {
    read_answer(frame, version, answer_cls, answer_names)
}

fn read_answer<'py>(
    frame: &Bound<'py, PyAny>,
    version: &Bound<'py, PyAny>,
    answer_cls: &Bound<'py, PyAny>,
    answer_names: &Bound<'py, PyAny>,
) -> PyResult<Option<(Bound<'py, PyTuple>, i32)>> {
    let Some(version) = int::<i16>(version) else { return Ok(None) };
    if !(3..=12).contains(&version) {
        return Ok(None);
    }
    let Some(buffer) = byte_buffer(frame) else { return Ok(None) };
    let py = frame.py();
    let make = |fields: Answer<'py>| crate::instance(answer_cls, answer_names, fields.into_pyobject(py)?);
    let Some((topics, throttle_time_ms)) = walk_answer(py, bytes_of(&buffer), version, make)? else {
        return Ok(None);
    };
    let mut read = Vec::with_capacity(topics.len());
    for (name, answers) in topics {
        read.push(PyTuple::new(py, [PyString::new(py, name).into_any(), PyTuple::new(py, answers)?.into_any()])?);
    }
    Ok(Some((PyTuple::new(py, read)?, throttle_time_ms)))
}

type Answer<'py> = (i32, i16, i64, i64, i64, Bound<'py, PyTuple>, Option<String>);

/// An answer's topics as `walk_answer` reads them: each one's name and its partition answers.
type Topics<'a, T> = Vec<(&'a str, Vec<T>)>;

/// The topics of a ProduceResponse frame (`b`, from after its size prefix) as `read_produce_response` reads
/// them, each partition answer made by `make`, and the answer's throttle_time_ms;
/// None for a frame left to Python (see the module's doc). The one walk of both readers of an answer.
fn walk_answer<'py, 'a, T>(
    py: Python<'py>,
    b: &'a [u8],
    version: i16,
    mut make: impl FnMut(Answer<'py>) -> PyResult<T>,
) -> PyResult<Option<(Topics<'a, T>, i32)>> {
    let mut r = Reader { b, pos: 4 };
    let flexible = version >= FIRST_FLEXIBLE;
    if flexible && r.no_tags().is_none() {
        return Ok(None);
    }
    let Some(count) = r.count(flexible, if flexible { 3 } else { 6 }) else { return Ok(None) };
    let min_size = match version {
        3 | 4 => 22,
        5..=7 => 30,
        8 => 36,
        _ => 33,
    };
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let name = if flexible { r.compact_string() } else { r.legacy_string() };
        let (Some(Some(name)), Some(answers)) = (name, r.count(flexible, min_size)) else { return Ok(None) };
        let mut read = Vec::with_capacity(answers);
        for _ in 0..answers {
            let Some(fields) = partition_answer(py, &mut r, version)? else { return Ok(None) };
            read.push(make(fields)?);
        }
        if flexible && r.no_tags().is_none() {
            return Ok(None);
        }
        topics.push((name, read));
    }
    let Some(throttle_time_ms) = r.i32() else { return Ok(None) };
    if flexible && r.no_tags().is_none() {
        return Ok(None); // the body's tags
    }
    Ok(Some((topics, throttle_time_ms)))
}

fn partition_answer<'py>(py: Python<'py>, r: &mut Reader<'_>, version: i16) -> PyResult<Option<Answer<'py>>> {
    let mut read = || -> Option<(i32, i16, i64, i64, i64)> {
        let head = (r.i32()?, r.i16()?, r.i64()?, r.i64()?);
        let start = if version >= 5 { r.i64()? } else { -1 };
        Some((head.0, head.1, head.2, head.3, start))
    };
    let Some((index, code, base, append, start)) = read() else { return Ok(None) };
    if version < 8 {
        return Ok(Some((index, code, base, append, start, PyTuple::empty(py), None)));
    }
    let flexible = version >= FIRST_FLEXIBLE;
    let mut errors = Vec::new();
    if flexible {
        if r.u8() != Some(1) {
            return Ok(None); // record errors in a flexible answer: records.py reads them
        }
    } else {
        let Some(n) = r.count(false, 6) else { return Ok(None) };
        for _ in 0..n {
            let (Some(batch_index), Some(text)) = (r.i32(), r.legacy_string()) else { return Ok(None) };
            errors.push((batch_index, text.map(str::to_owned)).into_pyobject(py)?.into_any());
        }
    }
    let message = if flexible { r.compact_string() } else { r.legacy_string() };
    let Some(message) = message else { return Ok(None) };
    if flexible && r.no_tags().is_none() {
        return Ok(None);
    }
    Ok(Some((index, code, base, append, start, PyTuple::new(py, errors)?, message.map(str::to_owned))))
}

/// `records.translated_produce_answer`: the client's answer to a Produce of one partition, written straight from
/// the broker's answer (`frame`, after its size prefix) with the partition's offsets moved by `delta` into the
/// client's space, the broker's throttle_time_ms passed on (KIP-219: the client backs off as long), and the error
/// code; None for anything but one topic `phys_topic` with the one answer for
/// `phys_partition` that `read_produce_response` above takes, or a value that does not fit (records.py then reads
/// it in Python). Log start: as is below 0, else max(start, phys_start) + delta when `chain_base` is None or
/// start > phys_start, else `chain_base`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn translated_produce_answer<'py>(
    py: Python<'py>,
    frame: &Bound<'py, PyAny>,
    version: &Bound<'py, PyAny>,
    correlation_id: &Bound<'py, PyAny>,
    name: &Bound<'py, PyAny>,
    index: &Bound<'py, PyAny>,
    phys_topic: &Bound<'py, PyAny>,
    phys_partition: &Bound<'py, PyAny>,
    shift: &Bound<'py, PyAny>,
) -> PyResult<Option<(Bound<'py, PyBytes>, i16)>> {
    let ints = (|| {
        Some((int::<i16>(version)?, int::<i32>(correlation_id)?, int::<i32>(index)?, int::<i32>(phys_partition)?,
              int::<Shift>(shift)?))
    })();
    let Some((version, correlation_id, index, phys_partition, shift)) = ints else { return Ok(None) };
    let Some(phys_topic) = phys_topic.cast::<PyString>().ok().and_then(|t| t.to_str().ok()) else { return Ok(None) };
    if !(3..=12).contains(&version) {
        return Ok(None);
    }
    let Some(buffer) = byte_buffer(frame) else { return Ok(None) };
    let Some((topics, throttle_time_ms)) = walk_answer(py, bytes_of(&buffer), version, Ok)? else { return Ok(None) };
    let Some((_, code, base, append, start, errors, message)) = only_answer(topics, phys_topic, phys_partition) else {
        return Ok(None);
    };
    let Some((base, start)) = translated_offsets(base, start, shift) else { return Ok(None) };
    let message = message.map(|m| PyString::new(py, &m).into_any());
    let tail = (version >= 8).then_some((errors.as_any(), message.as_ref()));
    let flexible = version >= FIRST_FLEXIBLE;
    let out = response_frame(correlation_id, throttle_time_ms, flexible, |out| {
        count(out, 1, flexible)?;
        string_bytes(out, optional(name), flexible)?;
        count(out, 1, flexible)?;
        answer_bytes(out, (index, code, base, append, start), tail, version, flexible)?;
        if flexible {
            out.push(0); // the topic's tags
        }
        Some(())
    });
    Ok(out.map(|out| (PyBytes::new(py, &out), code)))
}

/// `translated_produce_answer`'s (delta, phys_start, chain_base).
type Shift = (i64, i64, Option<i64>);

/// The one partition answer of `topics` when they are one topic `topic` with one answer, for `partition`.
fn only_answer<'py>(topics: Topics<'_, Answer<'py>>, topic: &str, partition: i32) -> Option<Answer<'py>> {
    let [(name, answers)]: [_; 1] = topics.try_into().ok()?;
    let [answer]: [_; 1] = answers.try_into().ok()?;
    (name == topic && answer.0 == partition).then_some(answer)
}

/// A broker's base offset and log start offset moved into the client's space (see `translated_produce_answer`),
/// or None when one does not fit an int64.
fn translated_offsets(base: i64, start: i64, (delta, phys_start, chain_base): Shift) -> Option<(i64, i64)> {
    let base = if base >= 0 { base.checked_add(delta)? } else { base };
    let start = if start < 0 {
        start
    } else {
        match chain_base {
            Some(chain_base) if start <= phys_start => chain_base,
            _ => start.max(phys_start).checked_add(delta)?,
        }
    };
    Some((base, start))
}

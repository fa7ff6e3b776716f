//! The byte-level twin of `fedkafka/protocol/records.py` (record-batch headers, magic v2): the same walks,
//! checks and patches, compiled. `records.py` calls it when it is importable and keeps the pure-Python code as
//! the fallback; the two must give identical bytes and identical error messages (tests/protocol/
//! test_records_twins.py). Errors cross as strings, never as exceptions: records.py raises its own
//! `RecordsError` with them, so the exception types stay Python's.
//!
//! Layout of a v2 batch header (offsets in bytes): baseOffset int64 @0, batchLength int32 @8,
//! partitionLeaderEpoch int32 @12, magic int8 @16, crc uint32 @17, attributes int16 @21,
//! lastOffsetDelta int32 @23, baseTimestamp int64 @27, maxTimestamp int64 @35, producerId int64 @43,
//! producerEpoch int16 @51, baseSequence int32 @53, recordCount int32 @57, records @61.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};

mod lane;
mod produce;

const HEADER_SIZE: i64 = 61;
const LOG_OVERHEAD: i64 = 12;
const CRC_START: usize = 21;
const CRC_AT: usize = 17;
const EPOCH_AT: usize = 12;
const PRODUCER_AT: usize = 43;
const MIN_RECORD: i64 = 7;
const COMPRESSION: i16 = 0x07;
const MAX_DELTA: i64 = (1 << 31) - 1;

/// The fields of one batch header, in `records.BatchHeader`'s order.
pub(crate) type Header = (i64, i64, i64, i8, u32, i16, i32, i64, i16, i32, i32);

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Walks the batches of a buffer as `records.iter_batches` does: yields headers in order, stops quietly at a
/// partial tail when it is allowed, and ends with the same message the Python walk raises.
struct Walk<'a> {
    buf: &'a [u8],
    pos: i64,
    allow_partial_tail: bool,
}

impl Iterator for Walk<'_> {
    type Item = Result<Header, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let (b, pos, end) = (self.buf, self.pos, self.buf.len() as i64);
        if pos >= end {
            return None;
        }
        if end - pos < HEADER_SIZE {
            self.pos = end;
            return if self.allow_partial_tail {
                None
            } else {
                Some(Err(format!("truncated batch header at byte {pos}")))
            };
        }
        let p = pos as usize;
        let magic = b[p + 16] as i8;
        if magic != 2 {
            self.pos = end;
            return Some(Err(format!("unsupported record batch magic {magic} at byte {pos}")));
        }
        let batch_length = i32_at(b, p + 8) as i64;
        let total = batch_length + LOG_OVERHEAD;
        if batch_length < HEADER_SIZE - LOG_OVERHEAD {
            self.pos = end;
            return Some(Err(format!("batch length {batch_length} too small at byte {pos}")));
        }
        if pos + total > end {
            self.pos = end;
            return if self.allow_partial_tail {
                None
            } else {
                Some(Err(format!("truncated batch at byte {pos}: needs {total}, has {}", end - pos)))
            };
        }
        self.pos = pos + total;
        Some(Ok((
            pos,
            i64_at(b, p),
            total,
            magic,
            u32_at(b, p + CRC_AT),
            i16_at(b, p + 21),
            i32_at(b, p + 23),
            i64_at(b, p + PRODUCER_AT),
            i16_at(b, p + 51),
            i32_at(b, p + 53),
            i32_at(b, p + 57),
        )))
    }
}

fn walk(buf: &[u8], allow_partial_tail: bool) -> Walk<'_> {
    Walk { buf, pos: 0, allow_partial_tail }
}

/// A C-contiguous byte buffer (bytes, bytearray, memoryview) held for the length of one call.
struct Bytes {
    buffer: PyBuffer<u8>,
}

impl Bytes {
    fn get(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        let buffer = PyBuffer::<u8>::get(obj)?;
        if !buffer.is_c_contiguous() {
            return Err(PyBufferError::new_err("records must be a contiguous buffer"));
        }
        Ok(Bytes { buffer })
    }

    fn slice(&self) -> &[u8] {
        let len = self.buffer.len_bytes();
        if len == 0 {
            return &[];
        }
        // Safety: a contiguous buffer of `len` bytes the exporter keeps alive while `self.buffer` is held; the
        // GIL is held for the whole call, so no Python code can resize or write it meanwhile.
        unsafe { std::slice::from_raw_parts(self.buffer.buf_ptr() as *const u8, len) }
    }

    fn slice_mut(&mut self) -> PyResult<&mut [u8]> {
        if self.buffer.readonly() {
            return Err(PyBufferError::new_err("records buffer is read-only"));
        }
        let len = self.buffer.len_bytes();
        if len == 0 {
            return Ok(&mut []);
        }
        // Safety: as in `slice`, and the exporter said the buffer is writable.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.buffer.buf_ptr() as *mut u8, len) })
    }
}

/// `records.iter_batches`: the headers before the first error, and that error's message (or None).
#[pyfunction]
#[pyo3(signature = (buf, allow_partial_tail = false))]
fn batch_headers(buf: &Bound<'_, PyAny>, allow_partial_tail: bool) -> PyResult<(Vec<Header>, Option<String>)> {
    let bytes = Bytes::get(buf)?;
    let mut headers = Vec::new();
    for item in walk(bytes.slice(), allow_partial_tail) {
        match item {
            Ok(h) => headers.push(h),
            Err(e) => return Ok((headers, Some(e))),
        }
    }
    Ok((headers, None))
}

fn check(b: &[u8]) -> Result<Vec<Header>, String> {
    checked(b, true)
}

/// The batches of `b` walked and checked as a broker checks them before appending: record count, room for it and,
/// when `crc`, the CRC-32C (`records.check_batches`).
fn checked(b: &[u8], crc: bool) -> Result<Vec<Header>, String> {
    let headers = walk(b, false).collect::<Result<Vec<_>, _>>()?;
    for h in &headers {
        let (position, length, attributes, count) = (h.0, h.2, h.5, h.10 as i64);
        if count < 0 {
            return Err(format!("negative record count {count} at byte {position}"));
        }
        let room = length - HEADER_SIZE;
        if attributes & COMPRESSION == 0 && count * MIN_RECORD > room {
            return Err(format!("{count} records cannot fit in {room} bytes at byte {position}"));
        }
        if crc && !crc_ok(b, h) {
            return Err(format!("CRC-32C mismatch in the batch at byte {position}"));
        }
    }
    Ok(headers)
}

fn crc_ok(b: &[u8], h: &Header) -> bool {
    let (start, stop) = (h.0 as usize, (h.0 + h.2) as usize);
    ::crc32c::crc32c(&b[start + CRC_START..stop]) == h.4
}

/// `records.check_batches`: every header checked as a broker checks it (walk, count, room, CRC-32C), or the
/// message of the first failure.
#[pyfunction]
fn checked_headers(buf: &Bound<'_, PyAny>) -> PyResult<(Vec<Header>, Option<String>)> {
    let bytes = Bytes::get(buf)?;
    Ok(match check(bytes.slice()) {
        Ok(headers) => (headers, None),
        Err(e) => (Vec::new(), Some(e)),
    })
}

/// A slotted dataclass made as `cls(*values)` makes it, without running its generated `__init__` (a Python frame
/// per object): `object.__new__(cls)`, then each field set through its slot. For the classes records.py passes
/// (BatchHeader, ProduceRequestFrame, ProducePartitionAnswer: no `__post_init__`, no defaults left unset);
/// tests/protocol/test_produce_frames_twins.py holds them to that.
pub(crate) fn instance<'py>(
    cls: &Bound<'py, PyAny>,
    names: &Bound<'py, PyAny>,
    values: Bound<'py, pyo3::types::PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    let obj = cls.call_method1(pyo3::intern!(py, "__new__"), (cls,))?;
    for (name, value) in names.try_iter()?.zip(values.iter()) {
        obj.setattr(name?.cast_into::<pyo3::types::PyString>()?, value)?;
    }
    Ok(obj)
}

/// What `produce_batch` and `forwarded_batch` answer: (the one batch's header as a `header_cls`, None, False), or
/// (None, the message, whether it is InvalidRecords rather than RecordsError).
type BatchAnswer<'py> = (Option<Bound<'py, PyAny>>, Option<String>, bool);

/// `records.produce_batch`: `batch_answer` of `one_batch` with its CRC-32C. `names`: the header class' fields, in
/// `Header`'s order.
#[pyfunction]
fn produce_batch<'py>(
    records: &Bound<'py, PyAny>,
    header_cls: &Bound<'py, PyAny>,
    names: &Bound<'py, PyAny>,
) -> PyResult<BatchAnswer<'py>> {
    batch_answer(records, header_cls, names, |b| one_batch(b, true))
}

/// The records (None: no bytes) checked by `check`, as `produce_batch` and `forwarded_batch` answer.
fn batch_answer<'py>(
    records: &Bound<'py, PyAny>,
    header_cls: &Bound<'py, PyAny>,
    names: &Bound<'py, PyAny>,
    check: impl FnOnce(&[u8]) -> Result<Header, (String, bool)>,
) -> PyResult<BatchAnswer<'py>> {
    let bytes = if records.is_none() { None } else { Some(Bytes::get(records)?) };
    let b = bytes.as_ref().map_or(&[][..], Bytes::slice);
    Ok(match check(b) {
        Ok(header) => (Some(instance(header_cls, names, header.into_pyobject(records.py())?)?), None, false),
        Err((e, invalid)) => (None, Some(e), invalid),
    })
}

/// The one batch of a Produce partition (`checked` with or without its CRC-32C, then Kafka's produce rules), or
/// (the message, whether it is InvalidRecords).
pub(crate) fn one_batch(b: &[u8], crc: bool) -> Result<Header, (String, bool)> {
    let headers = checked(b, crc).map_err(|e| (e, false))?;
    if headers.len() != 1 {
        let n = headers.len();
        return Err((format!("produce requests carry exactly one record batch per partition, not {n}"), true));
    }
    let h = headers[0];
    let (delta, count) = (h.6, h.10);
    if count < 1 || delta as i64 != count as i64 - 1 {
        return Err((format!("lastOffsetDelta {delta} does not match {count} records"), true));
    }
    Ok(h)
}

/// `records.forwarded_batch`: `produce_batch`, whose CRC-32C is checked only for a batch of a producer id or one
/// another check refuses (then the error `produce_batch` gives); a plain batch's is left to its broker.
#[pyfunction]
fn forwarded_batch<'py>(
    records: &Bound<'py, PyAny>,
    header_cls: &Bound<'py, PyAny>,
    names: &Bound<'py, PyAny>,
) -> PyResult<BatchAnswer<'py>> {
    batch_answer(records, header_cls, names, forwarded_one_batch)
}

/// `one_batch` as `forwarded_batch` checks it.
pub(crate) fn forwarded_one_batch(b: &[u8]) -> Result<Header, (String, bool)> {
    match one_batch(b, false) {
        Ok(h) if h.7 < 0 || crc_ok(b, &h) => Ok(h),
        Ok(h) => Err((format!("CRC-32C mismatch in the batch at byte {}", h.0), false)),
        Err(_) => Err(one_batch(b, true).expect_err("a batch refused without its CRC-32C is refused with it")),
    }
}

/// CRC-32C (Castagnoli) of a buffer.
#[pyfunction]
fn crc32c(buf: &Bound<'_, PyAny>) -> PyResult<u32> {
    Ok(::crc32c::crc32c(Bytes::get(buf)?.slice()))
}

/// `records.rewrite_producer`: producer id, epoch and base sequence of the batch at `position` (of `length`
/// bytes) overwritten in place, and its CRC-32C recomputed.
#[pyfunction]
fn rewrite_producer(
    buf: &Bound<'_, PyAny>,
    position: usize,
    length: usize,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> PyResult<()> {
    let mut bytes = Bytes::get(buf)?;
    let b = bytes.slice_mut()?;
    let stop = position.checked_add(length).filter(|&s| s <= b.len() && length >= HEADER_SIZE as usize);
    let Some(stop) = stop else {
        return Err(PyValueError::new_err(format!("no batch of {length} bytes at byte {position}")));
    };
    let at = position + PRODUCER_AT;
    b[at..at + 8].copy_from_slice(&producer_id.to_be_bytes());
    b[at + 8..at + 10].copy_from_slice(&producer_epoch.to_be_bytes());
    b[at + 10..at + 14].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = ::crc32c::crc32c(&b[position + CRC_START..stop]);
    b[position + CRC_AT..position + CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

const POLY: u32 = 0x82F6_3B78; // CRC-32C, bit-reflected: bit 31 is x^0

/// a(x) * b(x) modulo the CRC-32C polynomial, both bit-reflected (zlib's `multmodp`), without branches on data.
const fn multmodp(a: u32, mut b: u32) -> u32 {
    let mut p = 0u32;
    let mut i = 0;
    while i < 32 {
        p ^= b & ((a >> (31 - i)) & 1).wrapping_neg();
        b = (b >> 1) ^ (POLY & (b & 1).wrapping_neg());
        i += 1;
    }
    p
}

/// SHIFTS[j][d] = x^(8 * d * 16^j) modulo the polynomial: d * 16^j zero bytes appended to a raw CRC register
/// multiply it by that (zlib's crc32_combine), so any count of bytes below 2^32 takes one multiplication per
/// non-zero hex digit of it.
const SHIFTS: [[u32; 16]; 8] = {
    let mut powers = [0u32; 35]; // powers[k] = x^(2^k)
    powers[0] = 1 << 30; // x^1
    let mut k = 1;
    while k < 35 {
        powers[k] = multmodp(powers[k - 1], powers[k - 1]);
        k += 1;
    }
    let mut table = [[0u32; 16]; 8];
    let mut j = 0;
    while j < 8 {
        table[j][0] = 1 << 31; // x^0
        let mut d = 1;
        while d < 16 {
            table[j][d] = multmodp(table[j][d - 1], powers[3 + 4 * j]); // x^(8 * 16^j) = x^(2^(3 + 4j))
            d += 1;
        }
        j += 1;
    }
    table
};

/// A raw CRC-32C register (no initial or final inversion) after `n` more zero bytes.
fn crc_shift(mut crc: u32, n: u64) -> u32 {
    for (j, row) in SHIFTS.iter().enumerate() {
        let digit = ((n >> (4 * j)) & 15) as usize;
        if digit != 0 {
            crc = multmodp(row[digit], crc);
        }
    }
    crc
}

/// The CRC-32C of a batch whose bytes [43, 57) (producer id, epoch, base sequence) go from `old` to `new`, from
/// its stored one: CRC-32C is linear, so the change is the raw CRC of old XOR new moved past the `after` bytes that
/// follow them. A stored CRC that was wrong stays wrong by the same bits: its broker still refuses the batch.
fn crc_with(stored: u32, old: &[u8], new: &[u8; 14], after: u64) -> u32 {
    let mut change = [0u8; 14];
    for i in 0..14 {
        change[i] = old[i] ^ new[i];
    }
    let raw = ::crc32c::crc32c(&change) ^ ::crc32c::crc32c(&[0u8; 14]);
    stored ^ crc_shift(raw, after)
}

/// `records.producer_head`: the batch's first 61 bytes at `position` (of `length` bytes) with another producer id,
/// epoch and base sequence and the CRC-32C updated for them (`crc_with`): no pass over the batch's records.
#[pyfunction]
fn producer_head<'py>(
    py: Python<'py>,
    buf: &Bound<'py, PyAny>,
    position: usize,
    length: usize,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> PyResult<Bound<'py, PyBytes>> {
    let bytes = Bytes::get(buf)?;
    let b = bytes.slice();
    let fits = position.checked_add(length).is_some_and(|s| s <= b.len() && length >= HEADER_SIZE as usize);
    if !fits {
        return Err(PyValueError::new_err(format!("no batch of {length} bytes at byte {position}")));
    }
    let mut head = [0u8; HEADER_SIZE as usize];
    head.copy_from_slice(&b[position..position + HEADER_SIZE as usize]);
    let mut new = [0u8; 14];
    new[..8].copy_from_slice(&producer_id.to_be_bytes());
    new[8..10].copy_from_slice(&producer_epoch.to_be_bytes());
    new[10..].copy_from_slice(&base_sequence.to_be_bytes());
    let stored = u32_at(&head, CRC_AT);
    let crc = crc_with(stored, &head[PRODUCER_AT..PRODUCER_AT + 14], &new, (length - PRODUCER_AT - 14) as u64);
    head[PRODUCER_AT..PRODUCER_AT + 14].copy_from_slice(&new);
    head[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(PyBytes::new(py, &head))
}

/// Where the kept batches end and whether anything changes (`records.fit_to_segment`'s first pass).
fn fit_extent(b: &[u8], phys_end: Option<i64>, delta: i64, max_epoch: i32) -> Result<(usize, bool), String> {
    let mut keep_end = 0usize;
    let mut changed = delta != 0;
    for item in walk(b, true) {
        let h = item?;
        if phys_end.is_some_and(|end| h.1 >= end) {
            return Ok((keep_end, true));
        }
        if i32_at(b, h.0 as usize + EPOCH_AT) > max_epoch {
            changed = true;
        }
        keep_end = (h.0 + h.2) as usize;
    }
    Ok((keep_end, changed))
}

/// `records.fit_to_segment` (docs/DESIGN.md §5.5): None when nothing changes (the caller answers the records
/// themselves), else the kept batches with baseOffset + delta and the leader epoch capped; or an error message.
#[pyfunction]
fn fit_to_segment<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyAny>,
    phys_end: Option<i64>,
    delta: i64,
    max_epoch: i32,
) -> PyResult<(Option<Bound<'py, PyByteArray>>, Option<String>)> {
    let bytes = Bytes::get(records)?;
    let b = bytes.slice();
    let (keep_end, changed) = match fit_extent(b, phys_end, delta, max_epoch) {
        Ok(extent) => extent,
        Err(e) => return Ok((None, Some(e))),
    };
    if !changed {
        return Ok((None, None));
    }
    let mut error = None;
    // one copy, straight into the bytearray Python gets
    let out = PyByteArray::new_with(py, keep_end, |out| {
        out.copy_from_slice(&b[..keep_end]);
        error = patch_kept(out, delta, max_epoch);
        Ok(())
    })?;
    Ok(match error {
        None => (Some(out), None),
        Some(e) => (None, Some(e)),
    })
}

/// baseOffset + delta and the leader epoch capped at `max_epoch` in each (whole, walked before) batch of `out`.
fn patch_kept(out: &mut [u8], delta: i64, max_epoch: i32) -> Option<String> {
    let mut pos = 0usize;
    while pos < out.len() {
        let base = i64_at(out, pos);
        let Some(moved) = base.checked_add(delta) else {
            return Some(format!("baseOffset {base} + {delta} outside int64 at byte {pos}"));
        };
        out[pos..pos + 8].copy_from_slice(&moved.to_be_bytes());
        if i32_at(out, pos + EPOCH_AT) > max_epoch {
            out[pos + EPOCH_AT..pos + EPOCH_AT + 4].copy_from_slice(&max_epoch.to_be_bytes());
        }
        pos += (i32_at(out, pos + 8) as i64 + LOG_OVERHEAD) as usize;
    }
    None
}

/// `records.gap_batches` (docs/DESIGN.md §9): empty v2 batches covering logical offsets [first, end).
#[pyfunction]
fn gap_batches<'py>(py: Python<'py>, first: i64, end: i64, leader_epoch: i32) -> PyResult<Bound<'py, PyByteArray>> {
    let mut out: Vec<u8> = Vec::new();
    let mut base = first;
    while base < end {
        let delta = end.saturating_sub(base).min(MAX_DELTA + 1) - 1;
        let start = out.len();
        out.extend_from_slice(&base.to_be_bytes());
        out.extend_from_slice(&((HEADER_SIZE - LOG_OVERHEAD) as i32).to_be_bytes());
        out.extend_from_slice(&leader_epoch.to_be_bytes());
        out.push(2); // magic
        out.extend_from_slice(&0u32.to_be_bytes()); // crc, below
        out.extend_from_slice(&0i16.to_be_bytes()); // attributes
        out.extend_from_slice(&(delta as i32).to_be_bytes());
        out.extend_from_slice(&(-1i64).to_be_bytes()); // baseTimestamp: none
        out.extend_from_slice(&(-1i64).to_be_bytes()); // maxTimestamp: none
        out.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
        out.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
        out.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
        out.extend_from_slice(&0i32.to_be_bytes()); // recordCount
        let crc = ::crc32c::crc32c(&out[start + CRC_START..]);
        out[start + CRC_AT..start + CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        base += delta + 1;
    }
    Ok(PyByteArray::new(py, &out))
}

/// `records.frame_buffer`: a bytearray of `size` bytes left as the allocator hands them out, for a reader that
/// writes every byte before anything reads one (`upstream.FrameProtocol`; `bytearray(size)` zero-fills it first,
/// one more pass over each large broker answer). CPython's `PyByteArray_FromStringAndSize(NULL, n)` allocates
/// n + 1 bytes and sets only the trailing NUL (n = 0: no allocation); a failed allocation is a MemoryError.
#[pyfunction]
fn frame_buffer(py: Python<'_>, size: isize) -> PyResult<Bound<'_, PyByteArray>> {
    if size < 0 {
        return Err(PyValueError::new_err("negative count")); // bytearray(-1)'s error
    }
    // Safety: the call returns a new reference to a bytearray, or NULL with an exception set.
    unsafe {
        let any = Bound::from_owned_ptr_or_err(py, ffi::PyByteArray_FromStringAndSize(std::ptr::null(), size))?;
        Ok(any.cast_into_unchecked())
    }
}

/// The interface records.py was written against: it falls back to pure Python on any other (a stale build).
/// A function added without changing the others raises REVISION only, so a records.py of an older revision
/// (an older commit, `bench/data_path.py --compare-ref`) still uses this build; records.py asks for at least
/// the revision it calls (revision 1: `frame_buffer`; 2: `produce_batch` and the Produce frames of produce.rs;
/// 3: `translated_produce_answer`, the Produce lane's answer; 4: `read_produce_request`'s `max_elements`, an
/// optional argument a records.py of revision 2 or 3 does not pass; 5: `forwarded_batch`, `producer_head`, and
/// `produce_request_parts` taking a record set in pieces, a `records.RecordParts`, which no older records.py passes;
/// 6: `read_produce_answer`, and `translated_produce_answer` passing the broker's throttle time on, where an older
/// build wrote 0; 7: `LaneRoutes`, `read_lane_request` and `lane_written`, the Produce lane's steps of lane.rs; 8:
/// `read_lane_request`'s `lazy`, the request made of its head, a `records.LaneRequest`).
const INTERFACE: u32 = 1;
const REVISION: u32 = 8;

#[pymodule]
fn fedkafka_speedups(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("INTERFACE", INTERFACE)?;
    m.add("REVISION", REVISION)?;
    m.add_function(wrap_pyfunction!(batch_headers, m)?)?;
    m.add_function(wrap_pyfunction!(checked_headers, m)?)?;
    m.add_function(wrap_pyfunction!(self::crc32c, m)?)?;
    m.add_function(wrap_pyfunction!(rewrite_producer, m)?)?;
    m.add_function(wrap_pyfunction!(fit_to_segment, m)?)?;
    m.add_function(wrap_pyfunction!(gap_batches, m)?)?;
    m.add_function(wrap_pyfunction!(frame_buffer, m)?)?;
    m.add_function(wrap_pyfunction!(produce_batch, m)?)?;
    m.add_function(wrap_pyfunction!(forwarded_batch, m)?)?;
    m.add_function(wrap_pyfunction!(producer_head, m)?)?;
    m.add_function(wrap_pyfunction!(produce::read_produce_request, m)?)?;
    m.add_function(wrap_pyfunction!(produce::produce_request_parts, m)?)?;
    m.add_function(wrap_pyfunction!(produce::produce_response_frame, m)?)?;
    m.add_function(wrap_pyfunction!(produce::read_produce_response, m)?)?;
    m.add_function(wrap_pyfunction!(produce::read_produce_answer, m)?)?;
    m.add_function(wrap_pyfunction!(produce::translated_produce_answer, m)?)?;
    m.add_class::<lane::LaneRoutes>()?;
    m.add_function(wrap_pyfunction!(lane::read_lane_request, m)?)?;
    m.add_function(wrap_pyfunction!(lane::lane_written, m)?)?;
    Ok(())
}

//! The Produce lane's request step, compiled (revision 7): a client's Produce frame read, checked against what the
//! lane takes of a plain producer, its partitions looked up in a per-view route table and the broker's topics made,
//! in one call (`read_lane_request`). It is a fast path of fedkafka/proxy/core/produce_lane.py only: wherever the
//! Python lane would decide something this does not (a miss in the table, a batch of a producer id, anything the
//! lane leaves or refuses), it answers None and the Python lane reads the frame as before, so what it does answer
//! is what the Python lane would have made of the frame (tests/proxy/test_produce_lane_compiled.py).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use pyo3::prelude::*;
use pyo3::types::{PyList, PyMemoryView, PySlice, PyString, PyTuple};

use crate::produce::{byte_buffer, bytes_of, partition, request_head, tuple_new, Elements, Reader};

/// A route of the table: the Python lane's route object (a `produce.LaneRoute`), and the physical topic and
/// partition its segment names.
struct Route {
    route: Py<PyAny>,
    shift: Py<PyAny>, // the route's `shift`, for the broker request of one partition
    topic: Py<PyString>,
    topic_name: String, // the same, compared here
    partition: i32,
}

/// The routes the Python lane made for one view without authorization, by the client's topic name and partition
/// (`ProduceLane._missed` inserts each it caches, and clears the table when it drops its own cache).
#[pyclass(module = "fedkafka_speedups")]
pub struct LaneRoutes {
    topics: HashMap<String, HashMap<i32, Route>>,
    size: usize,
}

#[pymethods]
impl LaneRoutes {
    #[new]
    fn new() -> Self {
        LaneRoutes { topics: HashMap::new(), size: 0 }
    }

    fn insert(&mut self, name: String, index: i32, route: Py<PyAny>, topic: Bound<'_, PyString>, partition: i32
    ) -> PyResult<()> {
        let topic_name = topic.to_str()?.to_owned();
        let shift = route.bind(topic.py()).getattr(pyo3::intern!(topic.py(), "shift"))?.unbind();
        let routes = self.topics.entry(name).or_default();
        if routes.insert(index, Route { route, shift, topic: topic.unbind(), topic_name, partition }).is_none() {
            self.size += 1;
        }
        Ok(())
    }

    fn clear(&mut self) {
        self.topics.clear();
        self.size = 0;
    }

    fn __len__(&self) -> usize {
        self.size
    }
}

/// One partition of the request as read: its index and where its records are in the frame.
struct Part<'a> {
    index: i32,
    start: usize,
    stop: usize,
    route: &'a Route,
}

/// (the request as `records.read_produce_request` reads it, the routes in the request's order, the broker's
/// request as `produce.lane_upstream` makes it: its topics as `UpstreamProduce.of` groups them), or None: the Python
/// lane reads the frame. Taken: a well-read frame (within `max_elements`), no transactional id, acks 1 or -1, every
/// topic entry of at least one partition, every partition in `table`, its records one batch `forwarded_batch`
/// passes, of no producer id, and no physical partition named twice. `lazy` (revision 8: a class and its fields,
/// `records.LaneRequest`): a request of one partition made of its head, the frame and `max_elements` only, its
/// topics read from the frame when asked for, as `frame_cls` would have held them.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (frame, max_elements, table, frame_cls, frame_names, topic_cls, partition_cls, upstream, lazy=None))]
pub fn read_lane_request<'py>(
    frame: &Bound<'py, PyAny>,
    max_elements: &Bound<'py, PyAny>,
    table: PyRef<'py, LaneRoutes>,
    frame_cls: &Bound<'py, PyAny>,
    frame_names: &Bound<'py, PyAny>,
    topic_cls: &Bound<'py, PyAny>,
    partition_cls: &Bound<'py, PyAny>,
    upstream: &Bound<'py, PyAny>,
    lazy: Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Some(buffer) = byte_buffer(frame) else { return Ok(None) };
    let bytes = bytes_of(&buffer);
    let mut r = Reader { b: bytes, pos: 0 };
    let Some((head, flexible)) = request_head(&mut r) else { return Ok(None) };
    let (version, correlation_id, client_id, transactional_id, acks, timeout_ms) = head;
    if transactional_id.is_some() || (acks != 1 && acks != -1) {
        return Ok(None);
    }
    let left = if max_elements.is_none() { i64::MAX } else { max_elements.extract::<i64>().unwrap_or(-1) };
    let mut elements = Elements { left }; // an int past an int64: -1, no element, the Python lane reads it
    let Some(topics) = walk(&mut r, flexible, &mut elements, &table) else { return Ok(None) };
    let parts = || topics.iter().flat_map(|(_, parts)| parts.iter());
    for part in parts() {
        // `forwarded_one_batch` of a batch of no producer id, whose CRC-32C is left to its broker: the producer id
        // is read before any CRC-32C is computed (the Python lane checks such a batch again)
        match crate::one_batch(&bytes[part.start..part.stop], false) {
            Ok(h) if h.7 < 0 => {}
            _ => return Ok(None), // refused, or of a producer id: the Python lane decides
        }
    }
    let all: Vec<&Part<'_>> = parts().collect();
    let py = frame.py();
    let mut named = HashSet::with_capacity(all.len()); // a set, not all pairs: a request may name 10^5 partitions
    if !all.iter().all(|p| named.insert((p.route.topic_name.as_str(), p.route.partition))) {
        return Ok(None); // `handle` refuses each entry of a partition named twice
    }
    let view = PyMemoryView::from(frame)?;
    let new = tuple_new(py)?;
    let mut records = Vec::with_capacity(all.len());
    for part in &all {
        records.push(view.get_item(PySlice::new(py, part.start as isize, part.stop as isize, 1))?);
    }
    // lazy for one partition only: the broker's answer to more is translated in Python, which reads the topics
    let request = if let (Some((lazy_cls, lazy_names)), 1) = (lazy, all.len()) {
        let fields = (version, correlation_id, client_id, None::<&str>, acks, timeout_ms, frame, max_elements)
            .into_pyobject(py)?;
        crate::instance(&lazy_cls, &lazy_names, fields)?
    } else {
        let request_topics = request_topics(py, &new, &topics, &records, topic_cls, partition_cls)?;
        let fields = (version, correlation_id, client_id, None::<&str>, acks, timeout_ms, request_topics)
            .into_pyobject(py)?;
        crate::instance(frame_cls, frame_names, fields)?
    };
    let routes = PyList::new(py, all.iter().map(|p| p.route.route.clone_ref(py)))?;
    let broker_topics = upstream_topics(py, &new, &all, records, topic_cls, partition_cls)?;
    let (one_cls, one_names, many_cls, many_names, max_timeout_ms): UpstreamClasses<'py> = upstream.extract()?;
    // `produce.upstream_timeout_ms`: an acks=all client's own timeout, capped; acks 1 (taken upstream as acks=all)
    // waits up to the cap, Kafka reading the field only for acks=all
    let timeout_ms = if acks == -1 { timeout_ms.min(max_timeout_ms) } else { max_timeout_ms };
    let upstream = if let [part] = all[..] {
        let name = topics[0].0;
        let fields = (version, timeout_ms, broker_topics, correlation_id, name, part.index, part.route.shift.bind(py))
            .into_pyobject(py)?;
        crate::instance(&one_cls, &one_names, fields)?
    } else {
        crate::instance(&many_cls, &many_names, (version, timeout_ms, broker_topics).into_pyobject(py)?)?
    };
    Ok(Some(PyTuple::new(py, [request, routes.into_any(), upstream])?))
}

/// The request's topics as `records.read_produce_request` makes them: each partition's index and records (`records`,
/// the partitions' record sets in the request's order).
fn request_topics<'py>(
    py: Python<'py>,
    new: &Bound<'py, PyAny>,
    topics: &Topics<'_, '_>,
    records: &[Bound<'py, PyAny>],
    topic_cls: &Bound<'py, PyAny>,
    partition_cls: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    let mut records = records.iter();
    let mut request_topics = Vec::with_capacity(topics.len());
    for (name, parts) in topics {
        let mut read = Vec::with_capacity(parts.len());
        for part in parts {
            let Some(slice) = records.next() else { unreachable!("a record set per partition") };
            let fields = PyTuple::new(py, [part.index.into_pyobject(py)?.into_any(), slice.clone()])?;
            read.push(new.call1((partition_cls, fields))?);
        }
        let fields = PyTuple::new(py, [PyString::new(py, name).into_any(), PyTuple::new(py, read)?.into_any()])?;
        request_topics.push(new.call1((topic_cls, fields))?);
    }
    PyTuple::new(py, request_topics)
}

/// `produce.LANE_UPSTREAM`: the broker request's class of one partition and its fields, that of more partitions and
/// its fields, and the cap of its timeout.
type UpstreamClasses<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>, i32);

type Topics<'a, 't> = Vec<(&'a str, Vec<Part<'t>>)>;

/// The request's topics and partitions after its head, as `read_produce_request` walks them (counting elements),
/// each partition's route looked up; None for anything the Python lane must read or decide.
fn walk<'a, 't>(r: &mut Reader<'a>, flexible: bool, elements: &mut Elements, table: &'t LaneRoutes
) -> Option<Topics<'a, 't>> {
    let count = r.count(flexible, if flexible { 3 } else { 6 })?;
    elements.spend(count)?;
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let name = if flexible { r.compact_string()? } else { r.legacy_string()? };
        let name = name?;
        let partitions = r.count(flexible, if flexible { 6 } else { 8 })?;
        elements.spend(partitions)?;
        if partitions == 0 {
            return None; // `handle` answers an entry of no partition: not the lane's
        }
        let routes = table.topics.get(name)?;
        let mut parts = Vec::with_capacity(partitions);
        for _ in 0..partitions {
            let (index, span) = partition(r, flexible)?;
            let (start, stop) = span?;
            parts.push(Part { index, start, stop, route: routes.get(&index)? });
        }
        if flexible {
            r.no_tags()?;
        }
        topics.push((name, parts));
    }
    if flexible {
        r.no_tags()?;
    }
    (!topics.is_empty()).then_some(topics)
}

/// The broker's topics: each partition's records under its physical topic and partition, grouped by physical topic
/// in the order the topics first come (`UpstreamProduce.of`).
fn upstream_topics<'py>(
    py: Python<'py>,
    new: &Bound<'py, PyAny>,
    parts: &[&Part<'_>],
    records: Vec<Bound<'py, PyAny>>,
    topic_cls: &Bound<'py, PyAny>,
    partition_cls: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    let mut grouped: Vec<(&Route, Vec<Bound<'py, PyAny>>)> = Vec::new();
    let mut group_of: HashMap<&str, usize> = HashMap::new(); // an index, not a search: 10^5 topics may come
    for (part, records) in parts.iter().zip(records) {
        let fields = PyTuple::new(py, [part.route.partition.into_pyobject(py)?.into_any(), records])?;
        let written = new.call1((partition_cls, fields))?;
        match group_of.entry(part.route.topic_name.as_str()) {
            Entry::Occupied(at) => grouped[*at.get()].1.push(written),
            Entry::Vacant(at) => {
                at.insert(grouped.len());
                grouped.push((part.route, vec![written]));
            }
        }
    }
    let mut topics = Vec::with_capacity(grouped.len());
    for (first, written) in grouped {
        let topic = first.topic.bind(py).clone().into_any();
        let fields = PyTuple::new(py, [topic, PyTuple::new(py, written)?.into_any()])?;
        topics.push(new.call1((topic_cls, fields))?);
    }
    PyTuple::new(py, topics)
}

/// `produce.LaneProduce.read_response` of the broker's answer `frame` to the lane's request `upstream` (one
/// partition) when `translated_produce_answer` writes the client's answer and its base offset is not below the
/// segment's logical base: that answer as a `written_cls` (`produce.Written`: its frame and error code); None for
/// anything else, which the Python code then reads (and refuses or translates) as before.
#[pyfunction]
pub fn lane_written<'py>(
    frame: &Bound<'py, PyAny>,
    upstream: &Bound<'py, PyAny>,
    written_cls: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = frame.py();
    let topics = upstream.getattr(pyo3::intern!(py, "topic_data"))?;
    let Some((topic, partitions)) = crate::produce::pair(&topics.get_item(0)?) else { return Ok(None) };
    let Some((index, _)) = crate::produce::pair(&partitions.get_item(0)?) else { return Ok(None) };
    let version = upstream.getattr(pyo3::intern!(py, "version"))?;
    let name = upstream.getattr(pyo3::intern!(py, "name"))?;
    let shift = upstream.getattr(pyo3::intern!(py, "shift"))?;
    let Some((written, code)) = crate::produce::translated_produce_answer(
        py, frame, &version, &upstream.getattr(pyo3::intern!(py, "correlation_id"))?, &name,
        &upstream.getattr(pyo3::intern!(py, "index"))?, &topic, &index, &shift)?
    else {
        return Ok(None);
    };
    let shift = shift.extract::<(i64, i64, Option<i64>)>();
    let (Ok(version), Ok((delta, phys_start, _))) = (version.extract::<i16>(), shift) else {
        return Ok(None);
    };
    if phys_start > 0 {
        // below the segment's logical base (an error's -1, or a write below phys_start): the Python code refuses it
        let Ok(name) = name.cast::<PyString>() else { return Ok(None) };
        let Some(base) = written_base_offset(written.as_bytes(), version, name.to_str()?) else { return Ok(None) };
        if base < phys_start.saturating_add(delta) {
            return Ok(None);
        }
    }
    let obj = written_cls.call_method1(pyo3::intern!(py, "__new__"), (written_cls,))?;
    obj.setattr(pyo3::intern!(py, "frame"), written)?;
    obj.setattr(pyo3::intern!(py, "error_code"), code)?;
    Ok(Some(obj))
}

/// `records.translated_base_offset`: where `produce_response_frame` puts the one partition's base offset of one
/// topic `name` (size, correlation id, header tags, topic count, name, partition count, index, error code).
fn written_base_offset(written: &[u8], version: i16, name: &str) -> Option<i64> {
    let flexible = version >= 9;
    let mut name_bytes = Vec::new();
    if flexible {
        crate::produce::varint(&mut name_bytes, name.len() as u64 + 1);
    } else {
        name_bytes.extend_from_slice(&[0, 0]);
    }
    let pos = 8 + usize::from(flexible) + if flexible { 2 } else { 8 } + name_bytes.len() + name.len() + 6;
    Some(i64::from_be_bytes(written.get(pos..pos + 8)?.try_into().ok()?))
}

//! Node names across onnxruntime's graph optimizations: labelling the graph
//! handed to ORT, and mapping the nodes of ORT's optimized graph (and so of
//! its profiles) back to the ONNX nodes they came from.
//!
//! # Labels
//!
//! Before a model is handed to ORT every node of its main graph gets a
//! name: its own if it has one (and it is unique), else its first output's
//! name, as tract's profile names unnamed nodes (`runtime/timing.rs`), made
//! unique with `#2`, `#3`, … Names do not steer ORT's optimizer; they only
//! let the nodes be found again. Without them ORT calls an unnamed node
//! `<OpType>_<node index>` in its profile
//! (`onnxruntime/core/framework/sequential_executor.cc`,
//! `node_name_for_profiling`), an index found nowhere in the file.
//!
//! # How ORT names the nodes it makes (ORT 1.32, CPU, level `All`)
//!
//! Read from ORT's sources and checked on onnxq's QDQ `ppocr_cls`
//! (`q.onnx` from `onnxq quantize`) and its float original, by saving the
//! optimized graph ([`super::OrtOptions::save_optimized`]):
//!
//! * **QDQ fusions keep the target's name.** A selected group
//!   DQ… → Conv → Q becomes one `QLinearConv` named like the Conv
//!   (`ReplaceWithNew` → `CreateReplacementNode` calls
//!   `graph.AddNode(target.Name(), …)`,
//!   `onnxruntime/core/optimizer/selectors_actions/actions.cc`); the DQ and
//!   Q nodes disappear, their tensors become the new node's inputs and
//!   outputs (`ConvMoves`, `BinaryMoves`, … in
//!   `onnxruntime/core/optimizer/qdq_transformer/selectors_actions/qdq_actions.cc`).
//!   The same holds for MatMul → `QLinearMatMul` / `MatMulIntegerToFloat`,
//!   Add → `com.microsoft.QLinearAdd`, Mul → `QLinearMul`,
//!   GlobalAveragePool → `QLinearGlobalAveragePool`, … Seen: `Conv@1`
//!   (QLinearConv), `Add@3` (QLinearAdd), `Mul@1` (QLinearMul),
//!   `GlobalAveragePool@0` (QLinearGlobalAveragePool).
//! * **A new node named after an old one gets `_token_<n>`**:
//!   `Graph::GenerateNodeName(base)` returns `base` if no node has that
//!   name, else `base + "_token_" + counter`
//!   (`onnxruntime/core/graph/graph.cc`). The NHWC layout transformation
//!   replaces `QLinearConv` `Conv@1` by a `com.microsoft.QLinearConv`
//!   (`channels_last`) named `Conv@1_token_17` while the old node still
//!   exists. Inserted layout nodes are named after their op type:
//!   `Transpose`, `Transpose_token_165`, `ReorderInput_token_47`,
//!   `Reshape_token_34`.
//! * **Other fusions append a tag**: `EnsureUniqueDQForNodeUnit` copies a
//!   shared DQ as `<dq>/duplicated`
//!   (`qdq_transformer/ensure_unique_dq_for_node_unit.cc`); MatMul + Add →
//!   `Gemm` is `<matmul>/MatMulAddFusion`; the NCHWc transformer names its
//!   `com.microsoft.nchwc.Conv` after the (fused) Conv's *output tensor*:
//!   `batch_norm_0.tmp_2_nchwc` for Conv → BatchNormalization whose BN
//!   output is `batch_norm_0.tmp_2`.
//!
//! # The mapping
//!
//! An ORT node **carries** an ONNX node when its name is that node's label,
//! or becomes one (or one of its output tensors, for `_nchwc`) after
//! removing the suffixes above ([`SUFFIXES`], then `_token_<n>` repeatedly).
//! A name that only reduces to the ORT node's own op type (`Transpose_token_5`)
//! is ORT's own node, carrying nothing.
//!
//! An ONNX node that no ORT node carries was **absorbed** by a neighbour:
//! a `DequantizeLinear` by the nodes its output feeds (the fused node that
//! took over its input), a Conv/ConvTranspose/MatMul/Gemm (a fusion's head,
//! when ORT named the fused node after its tail) by its consumer, anything
//! else (`QuantizeLinear`, an activation or BatchNormalization folded into a
//! Conv, an Add folded into a Gemm) by its producer — following absorbed
//! neighbours until a carried one. A node computed only from initializers
//! that is not a `DequantizeLinear` was constant-folded at load: it is
//! **unattributed**, as are nodes whose walk finds nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::proto::{GraphProto, ModelProto};

/// Suffixes ORT appends to a name it derives a new node's name from, each
/// with where it comes from; stripped before `_token_<n>` is.
pub const SUFFIXES: &[(&str, &str)] = &[
    (
        "/duplicated",
        "EnsureUniqueDQForNodeUnit: a DQ shared by several node units, copied",
    ),
    (
        "/MatMulAddFusion",
        "MatMulAddFusion: MatMul + Add as one Gemm",
    ),
    (
        "_nchwc",
        "NchwcTransformer: a Conv in NCHWc layout, named after its output tensor",
    ),
];

/// Ops that head a fusion: absorbed by their consumer when ORT names the
/// fused node after the chain's tail.
const HEADS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "MatMul",
    "Gemm",
    "ConvInteger",
    "MatMulInteger",
];

/// One ONNX node of the graph handed to ORT.
#[derive(Clone, Debug)]
struct OnnxNode {
    label: String,
    op_type: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

/// The main graph as handed to ORT, indexed for the mapping.
#[derive(Clone, Debug, Default)]
pub struct Labels {
    nodes: Vec<OnnxNode>,
    by_label: HashMap<String, usize>,
    producer: HashMap<String, usize>,
    consumers: HashMap<String, Vec<usize>>,
    initializers: HashSet<String>,
}

impl Labels {
    /// Indexes a graph whose nodes are already labelled.
    pub fn of_graph(g: &GraphProto) -> Labels {
        let mut l = Labels::default();
        for t in &g.initializer {
            l.initializers.insert(t.name().to_string());
        }
        for (i, n) in g.node.iter().enumerate() {
            let node = OnnxNode {
                label: n.name().to_string(),
                op_type: n.op_type().to_string(),
                inputs: n.input.clone(),
                outputs: n.output.clone(),
            };
            l.by_label.entry(node.label.clone()).or_insert(i);
            for o in node.outputs.iter().filter(|o| !o.is_empty()) {
                l.producer.insert(o.clone(), i);
            }
            for x in node.inputs.iter().filter(|x| !x.is_empty()) {
                l.consumers.entry(x.clone()).or_default().push(i);
            }
            l.nodes.push(node);
        }
        l
    }

    /// Labels in graph order.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.label.as_str())
    }
}

/// Gives every node of the main graph its label (see the module docs) and
/// indexes the result.
pub fn label_nodes(model: &mut ModelProto) -> Labels {
    let Some(g) = model.graph.as_mut() else {
        return Labels::default();
    };
    // Names the file gives are kept first; derived labels avoid them.
    let mut taken: HashSet<String> = HashSet::new();
    let mut keep = vec![false; g.node.len()];
    for (i, n) in g.node.iter().enumerate() {
        let name = n.name();
        if !name.is_empty() && taken.insert(name.to_string()) {
            keep[i] = true;
        }
    }
    for (i, n) in g.node.iter_mut().enumerate() {
        if keep[i] {
            continue;
        }
        // The IR's label rule (`Graph::add_op`): `op@first-output`.
        let base = format!(
            "{}@{}",
            n.op_type(),
            n.output
                .iter()
                .find(|o| !o.is_empty())
                .map(String::as_str)
                .unwrap_or("")
        );
        let mut label = base.clone();
        let mut k = 2;
        while taken.contains(&label) {
            label = format!("{base}#{k}");
            k += 1;
        }
        taken.insert(label.clone());
        n.name = Some(label);
    }
    Labels::of_graph(g)
}

/// Where one node of ORT's optimized graph came from.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeOrigin {
    /// ORT's node name, as in its profile (`<name>_kernel_time`).
    pub ort_node: String,
    pub op_type: String,
    /// `""` for ONNX, `com.microsoft`, `com.microsoft.nchwc`, …
    pub domain: String,
    /// The ONNX node whose name it carries (see the module docs), if any.
    pub carries: Option<String>,
    /// Every ONNX node it stands for, carried and absorbed, in graph order.
    /// Empty for nodes ORT inserted (layout transposes and reorders). A
    /// DequantizeLinear that fed several fused nodes is listed under each.
    pub onnx_nodes: Vec<String>,
}

/// ORT's optimized graph in terms of the ONNX graph it was given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeMap {
    /// ORT's nodes in the optimized graph's order.
    pub nodes: Vec<NodeOrigin>,
    /// ONNX nodes no ORT node stands for: constant-folded at load, or
    /// removed. In graph order.
    pub unattributed: Vec<String>,
}

impl NodeMap {
    /// The ORT nodes standing for ONNX node `label`.
    pub fn ort_nodes_of(&self, label: &str) -> Vec<&NodeOrigin> {
        self.nodes
            .iter()
            .filter(|n| n.onnx_nodes.iter().any(|o| o == label))
            .collect()
    }

    /// The origin of ORT node `name`.
    pub fn get(&self, ort_node: &str) -> Option<&NodeOrigin> {
        self.nodes.iter().find(|n| n.ort_node == ort_node)
    }
}

/// Maps ORT's optimized graph back to `handed`, the labelled graph ORT was
/// given (see the module docs).
pub fn map_nodes(handed: &Labels, optimized: &GraphProto) -> NodeMap {
    let ort: Vec<(String, String, String)> = optimized
        .node
        .iter()
        .map(|n| {
            (
                n.name().to_string(),
                n.op_type().to_string(),
                n.domain().to_string(),
            )
        })
        .collect();
    map_named(handed, &ort)
}

/// [`map_nodes`] over `(name, op_type, domain)` triples.
pub(super) fn map_named(handed: &Labels, ort: &[(String, String, String)]) -> NodeMap {
    let carried: Vec<Option<usize>> = ort
        .iter()
        .map(|(name, op, _)| carried_node(handed, name, op))
        .collect();
    // Per ONNX node: the ORT nodes carrying it.
    let mut carriers: Vec<Vec<usize>> = vec![Vec::new(); handed.nodes.len()];
    for (k, c) in carried.iter().enumerate() {
        if let Some(i) = *c {
            carriers[i].push(k);
        }
    }
    let constant = constant_nodes(handed);
    let mut members: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); ort.len()];
    let mut unattributed = Vec::new();
    for i in 0..handed.nodes.len() {
        let owners = resolve(handed, &carriers, &constant, i);
        if owners.is_empty() {
            unattributed.push(handed.nodes[i].label.clone());
        }
        for k in owners {
            members[k].insert(i);
        }
    }
    let nodes = ort
        .iter()
        .zip(carried)
        .zip(members)
        .map(|(((name, op, domain), c), m)| NodeOrigin {
            ort_node: name.clone(),
            op_type: op.clone(),
            domain: domain.clone(),
            carries: c.map(|i| handed.nodes[i].label.clone()),
            onnx_nodes: m
                .into_iter()
                .map(|i| handed.nodes[i].label.clone())
                .collect(),
        })
        .collect();
    NodeMap {
        nodes,
        unattributed,
    }
}

/// The ONNX node an ORT node's name carries; see the module docs.
fn carried_node(h: &Labels, name: &str, op: &str) -> Option<usize> {
    let mut base = name;
    let mut derived = false;
    loop {
        if derived && base == op {
            return None;
        }
        if let Some(&i) = h.by_label.get(base) {
            return Some(i);
        }
        if derived {
            // `_nchwc` names a tensor, not a node.
            if let Some(&i) = h.producer.get(base) {
                return Some(i);
            }
        }
        let next = SUFFIXES
            .iter()
            .find_map(|(s, _)| base.strip_suffix(s))
            .or_else(|| strip_token(base))?;
        base = next;
        derived = true;
    }
}

/// `base` from `base_token_<digits>`.
fn strip_token(s: &str) -> Option<&str> {
    let (base, n) = s.rsplit_once("_token_")?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(base)
}

/// Nodes computed from initializers alone (directly or through other such
/// nodes): what ORT folds at load, DequantizeLinear aside.
fn constant_nodes(h: &Labels) -> Vec<bool> {
    let mut constant = vec![false; h.nodes.len()];
    // Graph order is topological (ONNX requires it), so one pass suffices.
    for (i, n) in h.nodes.iter().enumerate() {
        constant[i] = n.inputs.iter().filter(|x| !x.is_empty()).all(|x| {
            h.initializers.contains(x) || h.producer.get(x).is_some_and(|&p| p < i && constant[p])
        });
    }
    constant
}

/// The ORT nodes ONNX node `i` belongs to (see the module docs). The walk
/// goes upstream (producers) until a carried node or a node absorbed
/// downstream, and downstream (consumers) only from a DequantizeLinear or
/// a head: in a DAG neither direction can loop, and the downstream walk
/// never turns back.
fn resolve(h: &Labels, carriers: &[Vec<usize>], constant: &[bool], i: usize) -> BTreeSet<usize> {
    let mut i = i;
    loop {
        if !carriers[i].is_empty() {
            return carriers[i].iter().copied().collect();
        }
        let n = &h.nodes[i];
        let is_dq = n.op_type == "DequantizeLinear";
        if constant[i] && !is_dq {
            // Folded at load.
            return BTreeSet::new();
        }
        if is_dq || HEADS.contains(&n.op_type.as_str()) {
            let mut out = BTreeSet::new();
            downstream(h, carriers, i, &mut HashSet::new(), &mut out);
            return out;
        }
        let producer = n
            .inputs
            .iter()
            .filter(|x| !x.is_empty() && !h.initializers.contains(*x))
            .find_map(|x| {
                h.producer
                    .get(x)
                    .copied()
                    .filter(|&p| !constant[p] || is_dequantize(h, p))
            });
        match producer {
            Some(p) => i = p,
            None => return BTreeSet::new(),
        }
    }
}

/// The carried nodes reached from `i`'s consumers through nodes no ORT
/// node carries.
fn downstream(
    h: &Labels,
    carriers: &[Vec<usize>],
    i: usize,
    seen: &mut HashSet<usize>,
    out: &mut BTreeSet<usize>,
) {
    let consumers: BTreeSet<usize> = h.nodes[i]
        .outputs
        .iter()
        .flat_map(|o| h.consumers.get(o).into_iter().flatten().copied())
        .collect();
    for c in consumers {
        if !seen.insert(c) {
            continue;
        }
        if carriers[c].is_empty() {
            downstream(h, carriers, c, seen, out);
        } else {
            out.extend(carriers[c].iter().copied());
        }
    }
}

/// A constant DequantizeLinear is still a real producer (ORT keeps DQ
/// nodes out of constant folding so QDQ groups stay visible).
fn is_dequantize(h: &Labels, p: usize) -> bool {
    h.nodes[p].op_type == "DequantizeLinear"
}

/// ORT node names → the origin, for nodes found in a profile but not in the
/// optimized graph (there should be none).
pub(super) fn by_name(map: &NodeMap) -> BTreeMap<&str, &NodeOrigin> {
    map.nodes.iter().map(|n| (n.ort_node.as_str(), n)).collect()
}

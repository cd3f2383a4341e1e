//! Tensors as the sidecar moves them: a datatype, a shape and little-endian
//! bytes, row-major, batch dimension first.
//!
//! Keeping tensors as raw bytes makes the batcher's two hot operations —
//! concatenating requests along the batch dimension and scattering result
//! rows back — plain byte copies, whatever the element type.

use thiserror::Error;
use tract_onnx::prelude::{DatumType, Tensor as TractTensor};

/// An element type of the KServe v2 protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `BOOL`: one byte, 0 or 1.
    Bool,
    /// `UINT8`.
    U8,
    /// `UINT16`.
    U16,
    /// `UINT32`.
    U32,
    /// `UINT64`.
    U64,
    /// `INT8`.
    I8,
    /// `INT16`.
    I16,
    /// `INT32`.
    I32,
    /// `INT64`.
    I64,
    /// `FP16`: IEEE half precision.
    F16,
    /// `BF16`: bfloat16, raw contents only.
    Bf16,
    /// `FP32`.
    F32,
    /// `FP64`.
    F64,
    /// `BYTES`: variable-length byte strings.
    Bytes,
}

const ALL: [DataType; 14] = [
    DataType::Bool,
    DataType::U8,
    DataType::U16,
    DataType::U32,
    DataType::U64,
    DataType::I8,
    DataType::I16,
    DataType::I32,
    DataType::I64,
    DataType::F16,
    DataType::Bf16,
    DataType::F32,
    DataType::F64,
    DataType::Bytes,
];

impl DataType {
    /// Parses a v2 datatype name (`"FP32"`, `"BYTES"`…).
    pub fn from_v2(name: &str) -> Option<Self> {
        ALL.into_iter().find(|d| d.as_v2() == name)
    }

    /// The v2 datatype name.
    pub fn as_v2(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::U8 => "UINT8",
            DataType::U16 => "UINT16",
            DataType::U32 => "UINT32",
            DataType::U64 => "UINT64",
            DataType::I8 => "INT8",
            DataType::I16 => "INT16",
            DataType::I32 => "INT32",
            DataType::I64 => "INT64",
            DataType::F16 => "FP16",
            DataType::Bf16 => "BF16",
            DataType::F32 => "FP32",
            DataType::F64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Bytes per element; `None` for `BYTES`.
    pub fn element_size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 | DataType::F16 | DataType::Bf16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::U64 | DataType::I64 | DataType::F64 => 8,
            DataType::Bytes => return None,
        })
    }

    /// The matching tract datum type; `None` for `BF16`, which tract lacks.
    pub fn to_tract(self) -> Option<DatumType> {
        Some(match self {
            DataType::Bool => DatumType::Bool,
            DataType::U8 => DatumType::U8,
            DataType::U16 => DatumType::U16,
            DataType::U32 => DatumType::U32,
            DataType::U64 => DatumType::U64,
            DataType::I8 => DatumType::I8,
            DataType::I16 => DatumType::I16,
            DataType::I32 => DatumType::I32,
            DataType::I64 => DatumType::I64,
            DataType::F16 => DatumType::F16,
            DataType::F32 => DatumType::F32,
            DataType::F64 => DatumType::F64,
            DataType::Bytes => DatumType::String,
            DataType::Bf16 => return None,
        })
    }

    /// The v2 datatype of a tract datum type, if the protocol has one.
    pub fn from_tract(dt: DatumType) -> Option<Self> {
        ALL.into_iter().find(|d| d.to_tract() == Some(dt))
    }
}

/// The elements of a tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Fixed-size elements, little-endian, row-major.
    Fixed(Vec<u8>),
    /// One byte string per element, row-major.
    Bytes(Vec<Vec<u8>>),
}

/// A tensor: datatype, shape and contents that agree with each other.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    dtype: DataType,
    shape: Vec<usize>,
    data: TensorData,
}

/// Why a tensor could not be built or converted.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TensorError {
    /// The contents do not hold as many elements as the shape says.
    #[error("shape {shape:?} of {dtype} needs {expected} {unit}, got {actual}")]
    SizeMismatch {
        /// The datatype name.
        dtype: &'static str,
        /// The declared shape.
        shape: Vec<usize>,
        /// What the shape needs.
        expected: usize,
        /// What the contents hold.
        actual: usize,
        /// "bytes" or "elements".
        unit: &'static str,
    },
    /// The shape's element count overflows.
    #[error("shape {0:?} is too large")]
    TooLarge(Vec<usize>),
    /// Datatype and contents kinds differ (BYTES with fixed data or the reverse).
    #[error("{0} contents do not match the datatype")]
    WrongKind(&'static str),
    /// Tensors to concatenate differ in datatype or non-batch dimensions.
    #[error("cannot batch tensors of {0} and {1}")]
    Incompatible(String, String),
    /// Nothing to concatenate.
    #[error("no tensors to concatenate")]
    Empty,
    /// A tract tensor whose type the protocol cannot carry.
    #[error("the model produced a {0:?} tensor, which the v2 protocol cannot carry")]
    Unsupported(DatumType),
    /// tract refused the tensor.
    #[error("tract: {0}")]
    Tract(String),
}

// === impl Tensor ===

impl Tensor {
    /// Builds a tensor, checking that the contents fit the shape.
    pub fn try_new(dtype: DataType, shape: Vec<usize>, data: TensorData) -> Result<Self, TensorError> {
        let count = element_count(&shape)?;
        let (expected, actual, unit) = match (&data, dtype.element_size()) {
            (TensorData::Fixed(bytes), Some(size)) => {
                (count.checked_mul(size).ok_or_else(|| TensorError::TooLarge(shape.clone()))?, bytes.len(), "bytes")
            }
            (TensorData::Bytes(items), None) => (count, items.len(), "elements"),
            _ => return Err(TensorError::WrongKind(dtype.as_v2())),
        };
        if expected != actual {
            return Err(TensorError::SizeMismatch { dtype: dtype.as_v2(), shape, expected, actual, unit });
        }
        Ok(Self { dtype, shape, data })
    }

    /// A tensor of zeros (empty strings for `BYTES`).
    pub fn zeros(dtype: DataType, shape: Vec<usize>) -> Result<Self, TensorError> {
        let count = element_count(&shape)?;
        let data = match dtype.element_size() {
            Some(size) => TensorData::Fixed(vec![0; count * size]),
            None => TensorData::Bytes(vec![Vec::new(); count]),
        };
        Self::try_new(dtype, shape, data)
    }

    /// The datatype.
    pub fn dtype(&self) -> DataType {
        self.dtype
    }

    /// The elements of a numeric tensor as `f64`, row-major: FP32, FP64,
    /// INT32, INT64, INT8 and UINT8; `None` for other types.
    pub fn to_f64(&self) -> Option<Vec<f64>> {
        let TensorData::Fixed(bytes) = &self.data else { return None };
        macro_rules! read {
            ($ty:ty) => {
                bytes
                    .chunks_exact(std::mem::size_of::<$ty>())
                    .map(|c| <$ty>::from_le_bytes(c.try_into().unwrap_or_default()) as f64)
                    .collect()
            };
        }
        Some(match self.dtype {
            DataType::F32 => read!(f32),
            DataType::F64 => read!(f64),
            DataType::I32 => read!(i32),
            DataType::I64 => read!(i64),
            DataType::I8 => read!(i8),
            DataType::U8 => read!(u8),
            _ => return None,
        })
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The contents.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// Consumes the tensor into its contents.
    pub fn into_data(self) -> TensorData {
        self.data
    }

    /// The size of the batch dimension (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Concatenates tensors along the batch dimension. All must share the
    /// datatype and every other dimension.
    pub fn concat(parts: &[&Tensor]) -> Result<Tensor, TensorError> {
        let Some(first) = parts.first() else { return Err(TensorError::Empty) };
        if parts.len() == 1 {
            return Ok((*first).clone());
        }
        let rows = parts.iter().map(|t| t.rows()).sum::<usize>();
        for t in parts {
            if t.dtype != first.dtype || t.shape.get(1..) != first.shape.get(1..) || t.shape.is_empty() {
                return Err(TensorError::Incompatible(describe(first), describe(t)));
            }
        }
        let mut shape = first.shape.clone();
        shape[0] = rows;
        let data = match &first.data {
            TensorData::Fixed(_) => {
                let mut out = Vec::with_capacity(parts.iter().map(|t| t.byte_len()).sum());
                for t in parts {
                    if let TensorData::Fixed(b) = &t.data {
                        out.extend_from_slice(b);
                    }
                }
                TensorData::Fixed(out)
            }
            TensorData::Bytes(_) => TensorData::Bytes(
                parts
                    .iter()
                    .flat_map(|t| match &t.data {
                        TensorData::Bytes(items) => items.clone(),
                        TensorData::Fixed(_) => Vec::new(),
                    })
                    .collect(),
            ),
        };
        Tensor::try_new(first.dtype, shape, data)
    }

    /// Splits the tensor along the batch dimension into consecutive pieces of
    /// `rows[i]` rows each. The counts must add up to [`Tensor::rows`].
    pub fn split_rows(&self, rows: &[usize]) -> Result<Vec<Tensor>, TensorError> {
        let total: usize = rows.iter().sum();
        if total != self.rows() || self.shape.is_empty() {
            return Err(TensorError::Incompatible(describe(self), format!("{total} rows")));
        }
        let per_row = element_count(&self.shape[1..])?;
        let mut out = Vec::with_capacity(rows.len());
        let mut offset = 0;
        for &n in rows {
            let mut shape = self.shape.clone();
            shape[0] = n;
            let data = match &self.data {
                TensorData::Fixed(b) => {
                    let size = self.dtype.element_size().unwrap_or(1) * per_row;
                    TensorData::Fixed(b[offset * size..(offset + n) * size].to_vec())
                }
                TensorData::Bytes(items) => TensorData::Bytes(items[offset * per_row..(offset + n) * per_row].to_vec()),
            };
            out.push(Tensor { dtype: self.dtype, shape, data });
            offset += n;
        }
        Ok(out)
    }

    /// Contents size in bytes (for `BYTES`, the sum of the strings).
    pub fn byte_len(&self) -> usize {
        match &self.data {
            TensorData::Fixed(b) => b.len(),
            TensorData::Bytes(items) => items.iter().map(Vec::len).sum(),
        }
    }

    /// Converts to a tract tensor (one copy).
    pub fn to_tract(&self) -> Result<TractTensor, TensorError> {
        let dt = self.dtype.to_tract().ok_or(TensorError::WrongKind(self.dtype.as_v2()))?;
        match &self.data {
            TensorData::Fixed(bytes) => {
                let mut t = TractTensor::zero_dt(dt, &self.shape).map_err(|e| TensorError::Tract(e.to_string()))?;
                t.as_bytes_mut().copy_from_slice(bytes);
                Ok(t)
            }
            TensorData::Bytes(items) => {
                let strings: Vec<String> = items.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
                let array = tract_onnx::prelude::tract_ndarray::Array::from_shape_vec(self.shape.clone(), strings)
                    .map_err(|e| TensorError::Tract(e.to_string()))?;
                Ok(array.into_dyn().into())
            }
        }
    }

    /// Converts from a tract tensor (one copy).
    pub fn from_tract(t: &TractTensor) -> Result<Self, TensorError> {
        let dtype = DataType::from_tract(t.datum_type()).ok_or(TensorError::Unsupported(t.datum_type()))?;
        let data = if dtype == DataType::Bytes {
            let strings = t.to_plain_array_view::<String>().map_err(|e| TensorError::Tract(e.to_string()))?;
            TensorData::Bytes(strings.iter().map(|s| s.as_bytes().to_vec()).collect())
        } else {
            TensorData::Fixed(t.as_bytes().to_vec())
        };
        Tensor::try_new(dtype, t.shape().to_vec(), data)
    }
}

fn element_count(shape: &[usize]) -> Result<usize, TensorError> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| TensorError::TooLarge(shape.to_vec()))
}

fn describe(t: &Tensor) -> String {
    format!("{}{:?}", t.dtype.as_v2(), t.shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: Vec<usize>, values: &[f32]) -> Tensor {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::try_new(DataType::F32, shape, TensorData::Fixed(bytes)).expect("valid")
    }

    #[test]
    fn rejects_contents_that_do_not_fit_the_shape() {
        let err = Tensor::try_new(DataType::F32, vec![2, 3], TensorData::Fixed(vec![0; 20])).expect_err("short");
        assert_eq!(err.to_string(), "shape [2, 3] of FP32 needs 24 bytes, got 20");
        assert!(Tensor::try_new(DataType::Bytes, vec![2], TensorData::Fixed(vec![0; 2])).is_err());
        assert!(matches!(Tensor::zeros(DataType::U8, vec![usize::MAX, 2]), Err(TensorError::TooLarge(_))));
    }

    #[test]
    fn concat_then_split_gives_back_each_part() {
        let a = f32s(vec![1, 2], &[1.0, 2.0]);
        let b = f32s(vec![2, 2], &[3.0, 4.0, 5.0, 6.0]);
        let joined = Tensor::concat(&[&a, &b]).expect("concat");
        assert_eq!(joined, f32s(vec![3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        assert_eq!(joined.split_rows(&[1, 2]).expect("split"), vec![a, b]);
    }

    #[test]
    fn concat_refuses_other_inner_dimensions() {
        let a = f32s(vec![1, 2], &[1.0, 2.0]);
        let b = f32s(vec![1, 3], &[1.0, 2.0, 3.0]);
        assert!(matches!(Tensor::concat(&[&a, &b]), Err(TensorError::Incompatible(_, _))));
    }

    #[test]
    fn round_trips_through_tract() {
        let a = f32s(vec![2, 2], &[1.0, -2.0, 3.5, 0.0]);
        assert_eq!(Tensor::from_tract(&a.to_tract().expect("to")).expect("from"), a);
        let s = Tensor::try_new(DataType::Bytes, vec![2], TensorData::Bytes(vec![b"ab".to_vec(), b"".to_vec()]))
            .expect("s");
        assert_eq!(Tensor::from_tract(&s.to_tract().expect("to")).expect("from"), s);
    }

    #[test]
    fn every_datatype_name_round_trips() {
        for d in ALL {
            assert_eq!(DataType::from_v2(d.as_v2()), Some(d));
        }
        assert_eq!(DataType::from_v2("FLOAT"), None);
    }
}

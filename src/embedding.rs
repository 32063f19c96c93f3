//! Face templates as validated values.
//!
//! An [`Embedding`] can only be built from a vector of the store's dimension whose components
//! are all finite and not all zero; it is scaled to unit length on construction, so the inner
//! product of two embeddings is their cosine similarity. The plaintext is zeroed when dropped:
//! a template is as sensitive as the photo it came from (it can be inverted into a face).
//!
//! This module knows nothing of storage, indexes or the wire format.
use std::fmt;

use zeroize::Zeroize;

/// The dimension of templates in a store that was created without saying otherwise
/// (ArcFace-class matchers produce 512 values).
pub const DEFAULT_DIMENSION: usize = 512;

/// The largest dimension a store accepts; beyond it a request is surely a mistake.
pub const MAX_DIMENSION: usize = 4096;

/// Why a vector is not a valid template.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmbeddingError {
    #[error("embedding has {got} values, expected {expected}")]
    WrongDimension { got: usize, expected: usize },
    #[error("embedding value {index} is {value}; every value must be a finite number")]
    NonFinite { index: usize, value: f32 },
    #[error("embedding is the zero vector (or too close to it to scale to unit length)")]
    Zero,
}

/// A template of unit length, checked on construction. Zeroed on drop.
#[derive(Clone, PartialEq)]
pub struct Embedding(Box<[f32]>);

impl Embedding {
    /// Validates `values` for a store of dimension `dimension` and scales them to unit length.
    pub fn new(mut values: Vec<f32>, dimension: usize) -> Result<Self, EmbeddingError> {
        let checked = Self::check(&values, dimension);
        let norm = match checked {
            Ok(norm) => norm,
            Err(e) => {
                values.zeroize();
                return Err(e);
            }
        };
        let inv = (1.0 / norm) as f32;
        for v in &mut values {
            *v *= inv;
        }
        Ok(Self::boxed(values))
    }

    /// Rebuilds an embedding that was normalised before it was stored, keeping its exact bits
    /// (scaling again could move the last bit, and search results must not change on restart).
    pub(crate) fn from_stored(mut values: Vec<f32>, dimension: usize) -> Result<Self, EmbeddingError> {
        match Self::check(&values, dimension) {
            Ok(norm) if (norm - 1.0).abs() < 1e-3 => Ok(Self::boxed(values)),
            Ok(_) => Self::new(values, dimension),
            Err(e) => {
                values.zeroize();
                Err(e)
            }
        }
    }

    /// Boxes `values` without leaving an unzeroed copy behind (shrinking a vector whose
    /// capacity exceeds its length reallocates).
    fn boxed(mut values: Vec<f32>) -> Self {
        if values.capacity() == values.len() {
            return Embedding(values.into_boxed_slice());
        }
        let boxed: Box<[f32]> = values.as_slice().into();
        values.zeroize();
        Embedding(boxed)
    }

    /// Returns the vector's L2 norm (in f64, so that tiny or huge values neither underflow
    /// nor overflow) after checking dimension and finiteness.
    fn check(values: &[f32], dimension: usize) -> Result<f64, EmbeddingError> {
        if values.len() != dimension {
            return Err(EmbeddingError::WrongDimension { got: values.len(), expected: dimension });
        }
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(EmbeddingError::NonFinite { index, value });
        }
        let norm = values.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
        // Scaling a vector this short would amplify rounding noise into the template.
        if norm < 1e-6 {
            return Err(EmbeddingError::Zero);
        }
        Ok(norm)
    }

    /// The unit-length values.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    pub fn dimension(&self) -> usize {
        self.0.len()
    }

    /// Cosine similarity with another embedding of the same dimension.
    pub fn similarity(&self, other: &Embedding) -> f32 {
        crate::kernel::dot(&self.0, &other.0)
    }
}

impl Drop for Embedding {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Embedding {
    /// Never prints the values: a template must not reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Embedding({} values, redacted)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_to_unit_length() {
        let e = Embedding::new(vec![3.0, 4.0], 2).unwrap();
        assert_eq!(e.as_slice(), &[0.6, 0.8]);
        assert!((e.similarity(&e) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn rejects_invalid_vectors_with_a_useful_message() {
        let err = Embedding::new(vec![1.0; 511], 512).unwrap_err();
        assert_eq!(err.to_string(), "embedding has 511 values, expected 512");
        let err = Embedding::new(vec![1.0, f32::NAN, 0.0], 3).unwrap_err();
        assert!(matches!(err, EmbeddingError::NonFinite { index: 1, value } if value.is_nan()));
        assert_eq!(err.to_string(), "embedding value 1 is NaN; every value must be a finite number");
        assert!(matches!(Embedding::new(vec![0.0, f32::INFINITY], 2), Err(EmbeddingError::NonFinite { index: 1, .. })));
        assert_eq!(Embedding::new(vec![0.0; 4], 4), Err(EmbeddingError::Zero));
    }

    #[test]
    fn handles_tiny_and_huge_components() {
        let e = Embedding::new(vec![1e-5, 1e-5], 2).unwrap();
        assert!((e.similarity(&e) - 1.0).abs() < 1e-6);
        let e = Embedding::new(vec![3e38, 3e38], 2).unwrap();
        assert!((e.similarity(&e) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn debug_never_shows_values() {
        let e = Embedding::new(vec![0.25, 0.5], 2).unwrap();
        assert_eq!(format!("{e:?}"), "Embedding(2 values, redacted)");
    }
}

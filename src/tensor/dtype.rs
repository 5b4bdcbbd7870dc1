//! ONNX element types (`TensorProto.DataType`).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DType(pub i32);

impl DType {
    pub const UNDEFINED: DType = DType(0);
    pub const F32: DType = DType(1);
    pub const U8: DType = DType(2);
    pub const I8: DType = DType(3);
    pub const U16: DType = DType(4);
    pub const I16: DType = DType(5);
    pub const I32: DType = DType(6);
    pub const I64: DType = DType(7);
    pub const STRING: DType = DType(8);
    pub const BOOL: DType = DType(9);
    pub const F16: DType = DType(10);
    pub const F64: DType = DType(11);
    pub const U32: DType = DType(12);
    pub const U64: DType = DType(13);
    pub const BF16: DType = DType(16);

    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "f32",
            2 => "u8",
            3 => "i8",
            4 => "u16",
            5 => "i16",
            6 => "i32",
            7 => "i64",
            8 => "string",
            9 => "bool",
            10 => "f16",
            11 => "f64",
            12 => "u32",
            13 => "u64",
            14 => "c64",
            15 => "c128",
            16 => "bf16",
            17..=20 => "f8",
            21 => "u4",
            22 => "i4",
            23 => "f4",
            _ => "?",
        }
    }

    /// Bytes per element, where fixed and whole.
    pub fn size(self) -> Option<usize> {
        Some(match self.0 {
            2 | 3 | 9 | 17..=20 => 1,
            4 | 5 | 10 | 16 => 2,
            1 | 6 | 12 => 4,
            7 | 11 | 13 | 14 => 8,
            15 => 16,
            _ => return None,
        })
    }

    pub fn is_float(self) -> bool {
        matches!(self.0, 1 | 10 | 11 | 16)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

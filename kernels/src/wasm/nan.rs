//! NaN canonicalisation where a NaN's bits can be seen: a rewrite of the module's code
//! before it is compiled.
//!
//! WebAssembly leaves one thing to the CPU: the sign and payload bits of a NaN that an
//! arithmetic operation returns (x86 and ARM differ). Every comparison, conversion and
//! branch sees only "a NaN", the same everywhere; the bits themselves reach a program's
//! output only where it looks at them:
//!
//! - `f32.store` / `f64.store` (the bits go to memory, then anywhere);
//! - `i32.reinterpret_f32` / `i64.reinterpret_f64`;
//! - the sign operand of `f32.copysign` / `f64.copysign`;
//! - a scalar entering a vector (`f32x4.splat`, `replace_lane`, and the `f64x2` ones),
//!   and every vector float operation that can make a NaN, because a vector is read as
//!   integers by any other SIMD instruction.
//!
//! So the rewrite puts a canonical NaN (positive, quiet, payload 0: `0x7fc00000` and
//! `0x7ff8000000000000`) in place of any NaN at exactly those points, and nowhere else.
//! Cranelift's own option canonicalises after *every* float operation, which costs a
//! compare and a blend on the critical path of float-heavy code (twice the run time of
//! the example renderer); at the points above the cost is a few instructions per store.
//!
//! What a program sees differs from a spec runtime in one case only: a NaN that was not
//! made by arithmetic (loaded, or a constant) keeps its exact bits only when the
//! instruction right before the point above loaded it or made it (a copy through floats
//! stays exact); through anything else (a local, a call, `neg`, `select`) it reaches
//! that point canonicalised. NaN-boxing in float values is the one style of program
//! that notices; keep boxed values in integers.

use wasm_encoder::reencode::{self, Reencode, RoundtripReencoder};
use wasm_encoder::{CodeSection, Function, Instruction, ValType};
use wasmparser::{FunctionBody, Operator, Parser, Payload};

use crate::KernelError;

const CANONICAL_F32: u32 = 0x7fc0_0000;
const CANONICAL_F64: u64 = 0x7ff8_0000_0000_0000;

/// The module with a canonical NaN wherever a NaN's bits become visible. `bytes` must be
/// a valid module ([`super::check_module`] first): an error here means a module this
/// rewrite cannot handle, named in the message.
pub fn canonicalise(bytes: &[u8]) -> Result<Vec<u8>, KernelError> {
    let fail = |e: String| KernelError::InvalidInput(format!("the module cannot be prepared: {e}"));
    let params = defined_function_params(bytes).map_err(|e| fail(e.to_string()))?;
    let mut rewriter = Rewriter { params, next: 0 };
    let mut module = wasm_encoder::Module::new();
    rewriter
        .parse_core_module(&mut module, Parser::new(0), bytes)
        .map_err(|e| fail(format!("{e:?}")))?;
    Ok(module.finish())
}

/// The number of parameters of each function the module defines (not imports), in the
/// order of its code section: a function's first local after them is free for the
/// rewrite's scratch locals.
fn defined_function_params(bytes: &[u8]) -> Result<Vec<u32>, wasmparser::BinaryReaderError> {
    let mut type_params = Vec::new();
    let mut params = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::TypeSection(types) => {
                for group in types {
                    for sub in group?.into_types() {
                        type_params.push(match &sub.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => f.params().len() as u32,
                            _ => 0,
                        });
                    }
                }
            }
            Payload::FunctionSection(functions) => {
                for type_index in functions {
                    let type_index = type_index? as usize;
                    params.push(type_params.get(type_index).copied().unwrap_or(0));
                }
            }
            _ => {}
        }
    }
    Ok(params)
}

struct Rewriter {
    /// Parameters of each defined function.
    params: Vec<u32>,
    /// The defined function whose body comes next.
    next: usize,
}

/// A function's three scratch locals, after its own.
#[derive(Clone, Copy)]
struct Scratch {
    f32: u32,
    f64: u32,
    v128: u32,
}

/// What the rewrite does around one instruction.
enum Guard {
    /// Nothing: the instruction cannot show a NaN's bits.
    None,
    /// Canonicalise the scalar on top of the stack first.
    Before(ValType),
    /// Canonicalise the vector it leaves on the stack after it.
    After(Lanes),
}

#[derive(Clone, Copy)]
enum Lanes {
    F32x4,
    F64x2,
}

impl Reencode for Rewriter {
    type Error = std::convert::Infallible;

    fn parse_function_body(
        &mut self,
        code: &mut CodeSection,
        func: FunctionBody<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        let params = self.params.get(self.next).copied().unwrap_or(0);
        self.next += 1;
        let mut locals = Vec::new();
        let mut count = params;
        for pair in func.get_locals_reader()? {
            let (n, ty) = pair?;
            count = count.saturating_add(n);
            locals.push((n, RoundtripReencoder.val_type(ty)?));
        }
        let scratch = Scratch {
            f32: count,
            f64: count + 1,
            v128: count + 2,
        };
        locals.extend([(1, ValType::F32), (1, ValType::F64), (1, ValType::V128)]);
        let mut f = Function::new(locals);
        let mut reader = func.get_operators_reader()?;
        // Whether the value on top of the stack was just loaded or is a constant: its
        // bits are exact, the same on every CPU, and a store of it keeps them.
        let mut exact_on_top = false;
        while !reader.eof() {
            let op = reader.read()?;
            let guard = guard(&op);
            let exact = exact_value(&op);
            let instruction = RoundtripReencoder.instruction(op)?;
            match guard {
                Guard::Before(ty) if !exact_on_top => canonicalise_scalar(&mut f, ty, scratch),
                Guard::After(lanes) => {
                    f.instruction(&instruction);
                    canonicalise_vector(&mut f, lanes, scratch);
                    exact_on_top = false;
                    continue;
                }
                _ => {}
            }
            f.instruction(&instruction);
            exact_on_top = exact;
        }
        code.function(&f);
        Ok(())
    }
}

fn guard(op: &Operator<'_>) -> Guard {
    use Operator::*;
    match op {
        F32Store { .. }
        | I32ReinterpretF32
        | F32Copysign
        | F32x4Splat
        | F32x4ReplaceLane { .. } => Guard::Before(ValType::F32),
        F64Store { .. }
        | I64ReinterpretF64
        | F64Copysign
        | F64x2Splat
        | F64x2ReplaceLane { .. } => Guard::Before(ValType::F64),
        F32x4Add | F32x4Sub | F32x4Mul | F32x4Div | F32x4Min | F32x4Max | F32x4Sqrt | F32x4Ceil
        | F32x4Floor | F32x4Trunc | F32x4Nearest | F32x4DemoteF64x2Zero => {
            Guard::After(Lanes::F32x4)
        }
        F64x2Add | F64x2Sub | F64x2Mul | F64x2Div | F64x2Min | F64x2Max | F64x2Sqrt | F64x2Ceil
        | F64x2Floor | F64x2Trunc | F64x2Nearest | F64x2PromoteLowF32x4 => {
            Guard::After(Lanes::F64x2)
        }
        _ => Guard::None,
    }
}

/// A float the instruction pushes with bits fixed by the module and its memory.
fn exact_value(op: &Operator<'_>) -> bool {
    matches!(
        op,
        Operator::F32Load { .. }
            | Operator::F64Load { .. }
            | Operator::F32Const { .. }
            | Operator::F64Const { .. }
    )
}

/// `x` → `x == x ? x : canonical NaN`, through the scratch local of its type.
fn canonicalise_scalar(f: &mut Function, ty: ValType, scratch: Scratch) {
    let (local, nan, eq) = match ty {
        ValType::F64 => (
            scratch.f64,
            Instruction::F64Const(wasm_encoder::Ieee64::new(CANONICAL_F64)),
            Instruction::F64Eq,
        ),
        _ => (
            scratch.f32,
            Instruction::F32Const(wasm_encoder::Ieee32::new(CANONICAL_F32)),
            Instruction::F32Eq,
        ),
    };
    f.instruction(&Instruction::LocalTee(local))
        .instruction(&nan)
        .instruction(&Instruction::LocalGet(local))
        .instruction(&Instruction::LocalGet(local))
        .instruction(&eq)
        .instruction(&Instruction::Select);
}

/// Each lane `x` of the vector → `x == x ? x : canonical NaN`.
fn canonicalise_vector(f: &mut Function, lanes: Lanes, scratch: Scratch) {
    let (nan, eq) = match lanes {
        Lanes::F32x4 => {
            let lane = i128::from(CANONICAL_F32);
            (
                lane | lane << 32 | lane << 64 | lane << 96,
                Instruction::F32x4Eq,
            )
        }
        Lanes::F64x2 => {
            let lane = i128::from(CANONICAL_F64);
            (lane | lane << 64, Instruction::F64x2Eq)
        }
    };
    f.instruction(&Instruction::LocalTee(scratch.v128))
        .instruction(&Instruction::V128Const(nan))
        .instruction(&Instruction::LocalGet(scratch.v128))
        .instruction(&Instruction::LocalGet(scratch.v128))
        .instruction(&eq)
        .instruction(&Instruction::V128Bitselect);
}

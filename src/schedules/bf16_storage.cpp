// The bf16-as-uint16 lowering pass (see bf16_storage.h).
#include "bf16_storage.h"

#include "tessera/error.h"

namespace tessera {

namespace {

using namespace Halide;
using namespace Halide::Internal;

Type storage_type(Type t) { return t.is_bfloat() ? UInt(16, t.lanes()) : t; }

Expr u32_const(int lanes, uint32_t v) { return make_const(UInt(32, lanes), v); }

// uint16 bits of a bf16 -> the f32 it represents (exact).
Expr widen(const Expr& bits) {
  const int lanes = bits.type().lanes();
  return reinterpret(Float(32, lanes), cast(UInt(32, lanes), bits) << 16);
}

// f32 -> uint16 bits of the nearest bf16, ties to even; NaN keeps its sign
// and top mantissa bits and is made quiet (as Halide's own conversion).
Expr narrow(const Expr& f) {
  const int lanes = f.type().lanes();
  Expr b = reinterpret(UInt(32, lanes), f);
  Expr rounded = (b + (u32_const(lanes, 0x7fff) + ((b >> 16) & u32_const(lanes, 1)))) >> 16;
  Expr quiet_nan = (b >> 16) | u32_const(lanes, 0x40);
  return cast(UInt(16, lanes), select(is_nan(f), quiet_nan, rounded));
}

class Bf16AsU16 : public IRMutator {
  using IRMutator::visit;

  // A bf16 expression's value as f32 (others unchanged).
  Expr as_f32(const Expr& e) {
    Expr m = mutate(e);
    return e.type().is_bfloat() ? widen(m) : m;
  }

  Expr visit(const Cast* op) override {
    const Type from = op->value.type();
    if (op->type.is_bfloat() && from.is_bfloat()) return mutate(op->value);
    if (op->type.is_bfloat()) {
      // Wider floats were rounded to f32 by the frontend where it matters (round to odd).
      Expr v = mutate(op->value);
      return narrow(from == Float(32, from.lanes()) ? v : cast(Float(32, from.lanes()), v));
    }
    if (from.is_bfloat()) {
      Expr f = widen(mutate(op->value));
      return op->type == f.type() ? f : cast(op->type, f);
    }
    return IRMutator::visit(op);
  }

  Expr visit(const Load* op) override {
    if (!op->type.is_bfloat()) return IRMutator::visit(op);
    return Load::make(storage_type(op->type), op->name, mutate(op->index), op->image, op->param, mutate(op->predicate),
                      op->alignment);
  }

  Expr visit(const Variable* op) override {
    if (!op->type.is_bfloat()) return op;
    return Variable::make(storage_type(op->type), op->name, op->image, op->param, op->reduction_domain);
  }

  Expr visit(const FloatImm* op) override {
    if (!op->type.is_bfloat()) return op;
    return make_const(UInt(16), bfloat16_t(op->value).to_bits());
  }

  Stmt visit(const Allocate* op) override {
    Stmt s = IRMutator::visit(op);
    if (!op->type.is_bfloat()) return s;
    const Allocate* a = s.as<Allocate>();
    return Allocate::make(a->name, storage_type(a->type), a->memory_type, a->extents, a->condition, a->body,
                          a->new_expr, a->free_function);
  }

  Expr visit(const Call* op) override {
    bool bf16_args = false;
    for (const Expr& a : op->args) bf16_args |= a.type().is_bfloat();
    if (!op->type.is_bfloat() && !bf16_args) return IRMutator::visit(op);
    if (op->is_intrinsic(Call::reinterpret)) {
      Expr bits = mutate(op->args[0]);
      const Type to = storage_type(op->type);
      return bits.type() == to ? bits : reinterpret(to, bits);
    }
    std::vector<Expr> args;
    // Intrinsics that pass a value through keep its storage; math runs in f32.
    const bool pass_through = op->is_intrinsic({Call::if_then_else, Call::likely, Call::likely_if_innermost,
                                                Call::promise_clamped, Call::unsafe_promise_clamped,
                                                Call::return_second});
    for (const Expr& a : op->args) args.push_back(pass_through ? mutate(a) : as_f32(a));
    if (pass_through) return Call::make(storage_type(op->type), op->name, args, op->call_type, op->func,
                                        op->value_index, op->image, op->param);
    if (op->call_type != Call::PureIntrinsic && op->call_type != Call::PureExtern)
      fail("bf16 storage: cannot rewrite the call '", op->name, "' on bf16 values");
    const Type t = op->type.is_bfloat() ? Float(32, op->type.lanes()) : op->type;
    Expr r = Call::make(t, op->name, args, op->call_type, op->func, op->value_index, op->image, op->param);
    return op->type.is_bfloat() ? narrow(r) : r;
  }

  Expr visit(const VectorReduce* op) override {
    if (!op->type.is_bfloat()) return IRMutator::visit(op);
    return narrow(VectorReduce::make(op->op, as_f32(op->value), op->type.lanes()));
  }

  // Arithmetic and comparisons on bf16 values: in f32, rounded back when the result is bf16.
  template <typename T>
  Expr in_f32(const T* op) {
    if (!op->a.type().is_bfloat()) return IRMutator::visit(op);
    Expr r = T::make(as_f32(op->a), as_f32(op->b));
    return op->type.is_bfloat() ? narrow(r) : r;
  }
  Expr visit(const Add* op) override { return in_f32(op); }
  Expr visit(const Sub* op) override { return in_f32(op); }
  Expr visit(const Mul* op) override { return in_f32(op); }
  Expr visit(const Div* op) override { return in_f32(op); }
  Expr visit(const Mod* op) override { return in_f32(op); }
  Expr visit(const Min* op) override { return in_f32(op); }
  Expr visit(const Max* op) override { return in_f32(op); }
  Expr visit(const EQ* op) override { return in_f32(op); }
  Expr visit(const NE* op) override { return in_f32(op); }
  Expr visit(const LT* op) override { return in_f32(op); }
  Expr visit(const LE* op) override { return in_f32(op); }
  Expr visit(const GT* op) override { return in_f32(op); }
  Expr visit(const GE* op) override { return in_f32(op); }
};

}  // namespace

void store_bf16_as_u16(Halide::Pipeline& pipeline) { pipeline.add_custom_lowering_pass(new Bf16AsU16); }

}  // namespace tessera

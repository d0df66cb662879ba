//! The ABC-like language: AST with spans, nom parser, lowering to `Score`, printing, diagnostics.

//! The Rhai engine and the API it exposes; the one module that wires the others together.

//! The conformance suite: one set of generic tests every backend runs against its broker.

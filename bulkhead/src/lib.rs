//! meshwork-bulkhead: being built (see the project's issues).

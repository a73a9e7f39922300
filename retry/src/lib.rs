//! meshwork-retry: being built (see the project's issues).

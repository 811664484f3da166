//! RFC 3339 and RFC 1123 time formatting.

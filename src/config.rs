//! config.yml → typed Config, defaults and validation.

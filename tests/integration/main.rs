//! Integration tests: run the built binary against temporary directories of real scripts.

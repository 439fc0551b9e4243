//! Collective algorithms lowered to flows in a `TaskGraph`.

//! moesim
